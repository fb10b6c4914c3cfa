"""Django's SQLite backend, refusing with a clear sentence a file it could not write.

Without this, a read-only location (the container image's /app) surfaces as sqlite's
"unable to open database file", which names neither the file nor the setting.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.sqlite3 import base

from runtime.env import sqlite_problem


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        explicit = os.environ.get("DATABASE_URL", "").strip() != ""
        problem = sqlite_problem("DATABASE_URL", str(conn_params["database"]), explicit=explicit)
        if problem:
            raise ImproperlyConfigured(problem)
        return super().get_new_connection(conn_params)

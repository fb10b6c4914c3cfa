"""Django's SQLite backend, plus one check before the first connection (see base.py)."""

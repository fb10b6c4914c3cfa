"""ASGI entry point: HTTP to Django, websockets to the dashboard consumer."""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "infra_site.settings")
# Django must be set up before anything imports models or consumers.
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from chaos import kube  # noqa: E402
from dashboard.routing import websocket_urlpatterns  # noqa: E402
from door import daphne_hooks  # noqa: E402
from door.wscap import WebsocketCaps  # noqa: E402
from door.wsorigin import ExactOriginValidator  # noqa: E402
from runtime.gctuning import configure_gc  # noqa: E402

# What strangers send is bounded beneath daphne before it reaches the application:
# connections, deadlines, bodies, websocket frames and bytes (door/daphne_hooks.py).
daphne_hooks.install()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        # The caps come first: a refused connection costs no origin check or routing.
        "websocket": WebsocketCaps(ExactOriginValidator(URLRouter(websocket_urlpatterns))),
    }
)

# The Kubernetes client's generated API module takes about a second to import. The web
# process pays that at start, not on the first visitor's press; other commands (migrate,
# the poller) never need it.
kube.preload()

# Start-up is done: tune the garbage collector for many long-lived websockets (the
# reasons and the measurements are in runtime/gctuning.py).
configure_gc()

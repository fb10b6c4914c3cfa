# The app image: one image for all three processes (web, poller, watcher); the
# Deployments in k8s/app/ choose the command. Build: docker build -t <registry>/infra-chaos:<tag> .
#
# Stage 1 installs the runtime requirements (never the dev ones) into a virtualenv;
# stage 2 copies only that virtualenv and the app onto a fresh slim base, so pip, its
# caches and build leftovers are not in the final image.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# Every runtime dependency ships wheels for this base (psycopg[binary] brings libpq),
# so no compiler is needed.
RUN /opt/venv/bin/pip install --only-binary=:all: -r /tmp/requirements.txt
# What the app never runs leaves the image (about 100 MB of the virtualenv's 307 MB):
# pip and setuptools only install; the Kubernetes client's asyncio twin (kubernetes/aio,
# 68 MB) is never imported, the app uses the synchronous client; Twisted's own test
# suites are never run; translations other than English are never shown.
RUN /opt/venv/bin/pip uninstall --quiet --yes pip setuptools \
 && site=/opt/venv/lib/python3.11/site-packages \
 && rm -rf "$site/kubernetes/aio" \
 && find "$site/twisted" -depth -type d -name test -exec rm -rf {} + \
 && find "$site/django" -path '*/locale/*/LC_MESSAGES/*' ! -path '*/locale/en/*' -delete

FROM python:3.11-slim-bookworm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=infra_site.settings
# A fixed numeric uid/gid, matching runAsUser/runAsGroup in k8s/app/, with no shell and no
# home: the pods run as this user with a read-only root filesystem.
RUN groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Owned by root and not writable by the app user: the code cannot be changed at run time.
COPY . /app
# Static files are collected at build time (ServeStatic serves them from the web
# process). Settings demand a secret key; this one exists only for this command.
RUN DJANGO_SECRET_KEY=collectstatic-only-not-a-secret python manage.py collectstatic --noinput \
 && python -m compileall -q /app /opt/venv
USER 10001:10001
EXPOSE 8000
# The web process; the poller and watcher Deployments override the command. -v 0 turns
# off daphne's access log, which would write every visitor's IP address. The endpoint
# syntax sets a listen backlog of 4096 for reconnect storms, and such a storm gets 30 s
# to be accepted instead of 5 (see the Procfile).
CMD ["daphne", "-v", "0", "--websocket_connect_timeout", "30", "-e", "tcp:port=8000:interface=0.0.0.0:backlog=4096", "infra_site.asgi:application"]

"""The one seam to the Kubernetes API.

`core_api()` builds the client; every other function takes it as an argument so tests can
hand in a stub, and every call carries `_request_timeout` so a hung apiserver costs a
visitor seconds, not a worker thread forever. Callers never see the client's exception
zoo: every failure becomes a `KubeError` with a short reason. Results are plain `Pod`s
parsed from the API's JSON (no generated models), the same way for lists and watches.
Nothing here logs a request or a token.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException, OpenApiException
from kubernetes.config.config_exception import ConfigException

from chaos.pods import Pod, pod_from_dict

# (connect, read) seconds for ordinary calls.
TIMEOUT = (3.0, 5.0)
# A watch may be silent for its whole server-side timeout; allow that plus slack before a
# read timeout declares the stream stalled.
WATCH_READ_SLACK_S = 2.0
# How often a kubeconfig's credentials (its `tokenFile`) are read again.
TOKEN_REREAD_S = 60.0

# The kubernetes package is untyped; these give its entry points the types we rely on.
_load_incluster_config: Callable[..., None] = config.load_incluster_config
_load_kube_config: Callable[..., None] = config.load_kube_config

_lock = threading.Lock()
_cached: client.CoreV1Api | None = None


class KubeError(Exception):
    """A Kubernetes call that did not do its job.

    `reason` is short and safe to store and show staff: forbidden, not_found, conflict,
    gone (watch resourceVersion too old), disruption_budget (an eviction the namespace's
    PodDisruptionBudget does not allow), throttled (any other 429: the apiserver's own
    flow control), server_error, timeout, unreachable, bad_config, bad_response,
    api_error."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason if status is None else f"{reason} (HTTP {status})")
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class PodSnapshot:
    pods: list[Pod]
    resource_version: str


@dataclass(frozen=True)
class EventSnapshot:
    items: list[dict[str, Any]]
    resource_version: str


@dataclass(frozen=True)
class PodEvent:
    """One watch event. `pod` is None for BOOKMARKs, which only move resource_version."""

    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    pod: Pod | None
    resource_version: str


# The cause the apiserver names in a 429 that refuses an eviction for a budget
# (policy/v1 DisruptionBudgetCause, in the Status's details.causes[].reason: a
# StatusCause's type is serialised as "reason"); a 429 without it is flow control.
DISRUPTION_BUDGET_CAUSE = "DisruptionBudget"


def _status_reason(status: int | None, body: object = None) -> str:
    if status == 429:
        return "disruption_budget" if _budget_cause(body) else "throttled"
    if status == 401 or status == 403:
        return "forbidden"
    if status == 404:
        return "not_found"
    if status == 409:
        return "conflict"
    if status == 410:
        return "gone"
    if status is not None and status >= 500:
        return "server_error"
    return "api_error"


def _budget_cause(body: object) -> bool:
    try:
        status = json.loads(body) if isinstance(body, str | bytes) else None
    except ValueError:
        return False
    details = status.get("details") if isinstance(status, dict) else None
    causes = details.get("causes") if isinstance(details, dict) else None
    return any(
        isinstance(cause, dict) and cause.get("reason") == DISRUPTION_BUDGET_CAUSE
        for cause in causes or ()
    )


def _network_reason(exc: BaseException | None) -> str:
    # urllib3 2 makes NewConnectionError (refused, no route) a ConnectTimeoutError
    # subclass for old callers; a refused connection is not a timeout.
    if isinstance(exc, urllib3.exceptions.NewConnectionError):
        return "unreachable"
    if isinstance(exc, urllib3.exceptions.TimeoutError | TimeoutError):
        return "timeout"
    return "unreachable"


@contextmanager
def _translated() -> Iterator[None]:
    try:
        yield
    except ApiException as exc:
        raise KubeError(_status_reason(exc.status, exc.body), status=exc.status) from None
    except urllib3.exceptions.MaxRetryError as exc:
        raise KubeError(_network_reason(exc.reason)) from None
    except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as exc:
        raise KubeError(_network_reason(exc)) from None
    except ConfigException:
        raise KubeError("bad_config") from None
    except (OpenApiException, ValueError):
        # ValueError covers JSON that is not what the API promised.
        raise KubeError("bad_response") from None
    except OSError:
        raise KubeError("unreachable") from None


def _load(configuration: client.Configuration) -> None:
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        # The in-cluster loader re-reads the projected token file by itself (every minute).
        _load_incluster_config(client_configuration=configuration)
    else:
        # KUBECONFIG read now, not when the kubernetes package was imported (its default);
        # persist_config=False: never write refreshed credentials back into the file.
        _load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None,
            client_configuration=configuration,
            persist_config=False,
        )


def _reread_token_periodically(configuration: client.Configuration) -> None:
    """A kubeconfig `tokenFile` is read once by the loader; a rotated token would then
    fail every call from the next rotation on. Re-load the credentials every
    TOKEN_REREAD_S, keeping the client and its warm connections (a rebuilt client pays a
    new TLS handshake on a visitor's press)."""
    # Replaces the loader's own hook, which would re-install itself on every call; a
    # fresh load also covers what that hook did (expiring exec / OIDC credentials).
    state = {"at": time.monotonic()}

    def refresh(conf: client.Configuration) -> None:
        if time.monotonic() - state["at"] < TOKEN_REREAD_S:
            return
        state["at"] = time.monotonic()
        fresh = client.Configuration()
        try:
            _load(fresh)
        except (ConfigException, OSError, ValueError):
            return  # keep the credentials we have; the next call tries again later
        conf.api_key = fresh.api_key
        conf.api_key_prefix = fresh.api_key_prefix

    # Typed as None in the client's annotations, but it is a documented hook.
    cast(Any, configuration).refresh_api_key_hook = refresh


def _build() -> client.CoreV1Api:
    configuration = client.Configuration()
    _load(configuration)
    if not os.environ.get("KUBERNETES_SERVICE_HOST"):
        _reread_token_periodically(configuration)
    # No automatic retries: an eviction retried after a read timeout would report the
    # first attempt's success as an error, and a visitor is better served by a quick 503.
    configuration.retries = 0
    return client.CoreV1Api(client.ApiClient(configuration))


def preload() -> None:
    """Imports the client's lazily loaded API classes (slow: ~1 s of generated models)."""
    client.CoreV1Api  # noqa: B018 - the attribute access is the import


def core_api() -> client.CoreV1Api:
    """The process's CoreV1Api, built on first use.

    Raises KubeError("bad_config") when there is no usable configuration."""
    global _cached
    with _lock:
        if _cached is None:
            with _translated():
                _cached = _build()
        return _cached


def _read(response: Any) -> bytes:
    # With _preload_content=False the body is read here, and the connection handed back
    # to the pool only once it is.
    try:
        data: bytes = response.data
    finally:
        response.release_conn()
    return data


def _json(response: Any) -> dict[str, Any]:
    body = json.loads(_read(response))
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body


def list_pods(api: client.CoreV1Api, *, namespace: str, selector: str) -> PodSnapshot:
    with _translated():
        body = _json(
            api.list_namespaced_pod(
                namespace,
                label_selector=selector,
                _request_timeout=TIMEOUT,
                _preload_content=False,
            )
        )
        items = body.get("items") or []
        return PodSnapshot(
            pods=[pod_from_dict(item) for item in items if isinstance(item, dict)],
            resource_version=str((body.get("metadata") or {}).get("resourceVersion") or ""),
        )


def evict_pod(
    api: client.CoreV1Api, *, namespace: str, name: str, uid: str, resource_version: str
) -> None:
    """Evicts exactly the pod we listed, as we listed it, through the Eviction API.

    The apiserver checks the namespace's PodDisruptionBudget atomically with the eviction
    and refuses with 429 when it would be broken: KubeError "disruption_budget". That
    guard holds whoever else evicts at the same time (another copy of the app, a drain).
    Preconditions on the UID and resourceVersion make it answer 409 (KubeError
    "conflict") instead of evicting if the name now belongs to a replacement, or if the
    pod changed since the list: already terminating (someone else's kill), relabelled, no
    longer Ready. So a pod that got its deletionTimestamp from somebody else is never
    reported as our kill."""
    with _translated():
        _read(
            api.create_namespaced_pod_eviction(
                name,
                namespace,
                body=client.V1Eviction(
                    metadata=client.V1ObjectMeta(name=name, namespace=namespace),
                    delete_options=client.V1DeleteOptions(
                        preconditions=client.V1Preconditions(
                            uid=uid, resource_version=resource_version
                        )
                    ),
                ),
                _request_timeout=TIMEOUT,
                _preload_content=False,
            )
        )


def list_events(api: client.CoreV1Api, *, namespace: str) -> EventSnapshot:
    with _translated():
        body = _json(
            api.list_namespaced_event(namespace, _request_timeout=TIMEOUT, _preload_content=False)
        )
        return EventSnapshot(
            items=[item for item in body.get("items") or [] if isinstance(item, dict)],
            resource_version=str((body.get("metadata") or {}).get("resourceVersion") or ""),
        )


def watch_pods(
    api: client.CoreV1Api,
    *,
    namespace: str,
    selector: str,
    resource_version: str,
    timeout_s: int,
) -> Iterator[PodEvent]:
    """Pod changes after `resource_version`, for at most about `timeout_s` seconds.

    Raises KubeError("gone") when that version is too old (re-list then), and
    KubeError("timeout") when the stream goes silent longer than its timeout plus slack."""
    for kind, raw, version in _watch(
        api.list_namespaced_pod,
        namespace,
        label_selector=selector,
        resource_version=resource_version,
        timeout_s=timeout_s,
    ):
        pod = None if kind == "BOOKMARK" else pod_from_dict(raw)
        yield PodEvent(type=kind, pod=pod, resource_version=version)


def watch_events(
    api: client.CoreV1Api, *, namespace: str, resource_version: str, timeout_s: int
) -> Iterator[tuple[str, dict[str, Any], str]]:
    """Kubernetes Events after `resource_version`: (type, raw event, resourceVersion)."""
    return _watch(
        api.list_namespaced_event,
        namespace,
        resource_version=resource_version,
        timeout_s=timeout_s,
    )


def _watch(
    func: Any, namespace: str, *, resource_version: str, timeout_s: int, **kwargs: Any
) -> Iterator[tuple[str, dict[str, Any], str]]:
    # Reads the stream itself rather than through kubernetes.watch.Watch: that helper
    # retries a 410 on its own when it can, and crashes on ERROR events when asked for
    # raw JSON (client 37), while the caller here must see every 410 to re-list.
    with _translated():
        # A raw urllib3 response (_preload_content=False), whatever the stub's annotation says.
        response: Any = func(
            namespace,
            resource_version=resource_version,
            timeout_seconds=timeout_s,
            allow_watch_bookmarks=True,
            watch=True,
            _request_timeout=(TIMEOUT[0], timeout_s + WATCH_READ_SLACK_S),
            _preload_content=False,
            **kwargs,
        )
        try:
            for line in _lines(response):
                yield _watch_event(json.loads(line))
        finally:
            response.close()
            response.release_conn()


def _lines(response: Any) -> Iterator[bytes]:
    # One JSON object per line; a chunk may hold several lines or part of one.
    buffer = b""
    for chunk in response.stream(amt=None, decode_content=False):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        yield from (line for line in lines if line.strip())
    if buffer.strip():
        yield buffer


def _watch_event(event: Any) -> tuple[str, dict[str, Any], str]:
    if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
        raise ValueError("malformed watch event")
    kind = str(event.get("type"))
    raw: dict[str, Any] = event["object"]
    if kind == "ERROR":
        # A Status object: 410 when resource_version is too old, or anything else.
        code = raw.get("code")
        status = code if isinstance(code, int) else None
        raise KubeError(_status_reason(status), status=status)
    if kind not in {"ADDED", "MODIFIED", "DELETED", "BOOKMARK"}:
        raise ValueError(f"unexpected watch event type {kind!r}")
    version = str((raw.get("metadata") or {}).get("resourceVersion") or "")
    return kind, raw, version

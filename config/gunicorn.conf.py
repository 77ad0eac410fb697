"""gunicorn's settings for the production image's `web` command (docker/entrypoint.sh; docs/deploy.md).

Every number comes from the environment so that one image fits every size of pod. Threads share a
worker's memory (the portal's requests mostly wait on PostgreSQL), so the default is few worker
processes with several threads each: GUNICORN_WORKERS x GUNICORN_THREADS requests at once, and as
many PostgreSQL connections (persistent: DB_CONN_MAX_AGE).
"""

import os


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


# All interfaces inside the container (the pod's IP); PORT names the port, GUNICORN_BIND overrides both.
_ALL_INTERFACES = "0.0.0.0"  # noqa: S104  # nosec B104 - the container's own interfaces
bind = [os.environ.get("GUNICORN_BIND") or f"{_ALL_INTERFACES}:{_int('PORT', 8000)}"]
workers = _int("GUNICORN_WORKERS", 2)
threads = _int("GUNICORN_THREADS", 4)
worker_class = "gthread"
# A request still running after this many seconds gets its worker restarted (the load balancer's own
# timeout should be a little longer); a stop waits GRACEFUL_TIMEOUT for requests in flight.
timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = _int("GUNICORN_GRACEFUL_TIMEOUT", 30)
keepalive = _int("GUNICORN_KEEPALIVE", 5)
# Workers are recycled now and then (a slow leak cannot grow forever), not all at once.
max_requests = _int("GUNICORN_MAX_REQUESTS", 2000)
max_requests_jitter = _int("GUNICORN_MAX_REQUESTS_JITTER", 200)
# The addresses whose X-Forwarded-Proto gunicorn believes: the load balancer's or ingress's (a comma-
# separated list of addresses or networks, "*" for any when only the proxy can reach the pod).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# The heartbeat files in memory, not on the (possibly read-only) root filesystem.
# gunicorn makes them with mkstemp (unique names, mode 0600).
_SHARED_MEMORY = "/dev/shm"  # noqa: S108  # nosec B108
worker_tmp_dir = _SHARED_MEMORY if os.path.isdir(_SHARED_MEMORY) else None
# No control socket: it would be created under $HOME, which the image's user does not have.
control_socket_disable = True
# Off by default: the portal writes one JSON line per request itself (observability.middleware,
# with the request id and the user); "-" adds gunicorn's own plain-text access line to standard output.
accesslog = os.environ.get("GUNICORN_ACCESS_LOG", "") or None
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOG_LEVEL", "info")


def child_exit(server: object, worker: object) -> None:
    """A gunicorn worker ended: its live gauges leave the multiprocess metrics directory
    (PROMETHEUS_MULTIPROC_DIR; docs/operations.md#metrics)."""
    from observability.instruments import mark_process_dead

    mark_process_dead(worker.pid)  # type: ignore[attr-defined]

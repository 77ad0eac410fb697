"""A Celery worker's own Prometheus endpoint (docs/operations.md#metrics).

What the engine observes as it runs (the approval-to-verified histogram of
`observability.instruments`) is observed in the worker processes, and a worker serves no HTTP.
prometheus-client's multiprocess mode joins the processes of one host only, so where web and
worker run in separate pods or containers the web's `/metrics` never sees the worker's counts.
With WORKER_METRICS_PORT set, the worker's main process therefore answers `GET /metrics` itself on
that port, started when the worker is ready (`worker_ready`), in a daemon thread:

- it serves the observed metrics only (`instruments.registry()`: with PROMETHEUS_MULTIPROC_DIR set,
  every prefork child's files added up; the image's entrypoint sets a directory of its own for the
  worker). The gauges read from the database stay on the web's `/metrics`: one source each, so that
  sums over the scraped targets count nothing twice;
- it asks the same bearer METRICS_TOKEN as the web's `/metrics` (`views.metrics_refusal`);
- a port that cannot be bound is logged as an error and the worker carries on: provisioning matters
  more than its metrics.

Beat observes nothing of its own (it publishes tasks; its heartbeat is read from Redis), so it has
no endpoint.
"""

from __future__ import annotations

import logging
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from celery.signals import worker_process_shutdown, worker_ready, worker_shutdown
from django.conf import settings
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import instruments
from .views import metrics_refusal

logger = logging.getLogger(__name__)

PATH = "/metrics"
_server: ThreadingHTTPServer | None = None


class _Handler(BaseHTTPRequestHandler):
    server_version = "governance-worker-metrics"

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != PATH:
            self._answer(404, b"not found: the worker answers /metrics only\n", "text/plain")
            return
        refusal = metrics_refusal(self.headers.get("Authorization", ""))
        if refusal is not None:
            status, text = refusal
            extra = {"WWW-Authenticate": 'Bearer realm="metrics"'} if status == 401 else {}
            self._answer(status, text.encode(), "text/plain", extra)
            return
        self._answer(200, generate_latest(instruments.registry()), CONTENT_TYPE_LATEST)

    def _answer(self, status: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Prometheus scrapes every few seconds: no log line per scrape."""


def start(address: str, port: int) -> ThreadingHTTPServer:
    """Serve the observed metrics on (address, port) from a daemon thread; the bound server."""
    server = ThreadingHTTPServer((address, port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="worker-metrics", daemon=True).start()
    return server


@worker_ready.connect(dispatch_uid="observability.worker_metrics_start")
def _worker_ready(sender: Any = None, **_: Any) -> None:
    global _server
    port = settings.WORKER_METRICS_PORT
    if not port or _server is not None:
        return
    prefork = type(getattr(sender, "pool", None)).__module__ == "celery.concurrency.prefork"
    if prefork and not instruments.multiprocess_dir():
        logger.warning(
            "worker metrics: PROMETHEUS_MULTIPROC_DIR is unset, so what the prefork children observe is not served"
        )
    try:
        _server = start(settings.WORKER_METRICS_ADDRESS, port)
    except OSError as exc:
        logger.error("worker metrics: cannot listen on port %s (%s); the worker runs without them", port, exc)
        return
    logger.info("worker metrics: serving %s on port %s", PATH, _server.server_address[1])


@worker_shutdown.connect(dispatch_uid="observability.worker_metrics_stop")
def _worker_shutdown(**_: Any) -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server.server_close()
        _server = None


@worker_process_shutdown.connect(dispatch_uid="observability.worker_metrics_child_exit")
def _child_exit(pid: int | None = None, **_: Any) -> None:
    """A prefork child ended: its live gauges leave the multiprocess directory (as gunicorn's
    `child_exit` hook does for the web); its counters and histograms keep counting."""
    instruments.mark_process_dead(pid or os.getpid())

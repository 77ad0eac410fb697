"""Liveness and readiness (docs/operations.md#health): answered over plain HTTP with a pod IP as
Host under production's SSL redirect and host list, the dependencies really checked, and nothing
of their errors shown to an anonymous caller."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from django.db.migrations.recorder import MigrationRecorder
from django.test import Client

from observability import health
from observability.heartbeat import beat_seen
from observability.tasks import beat_heartbeat

pytestmark = pytest.mark.django_db
POD_IP = "10.42.0.17:8000"
TOKEN = "metrics-test-token-0123456789"


@pytest.fixture
def production_like(settings: Any) -> Any:
    """Production's redirect to HTTPS and its host list; a token for operators."""
    settings.SECURE_SSL_REDIRECT = True
    settings.ALLOWED_HOSTS = ["portal.example.com"]
    settings.METRICS_TOKEN = TOKEN
    return settings


def get(path: str, *, token: str = "", host: str = POD_IP) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return Client().get(path, HTTP_HOST=host, headers=headers)


@pytest.mark.parametrize("path", ["/healthz", "/health/live"])
def test_liveness_answers_plain_http_with_a_pod_ip_as_host(production_like: Any, path: str) -> None:
    response = get(path)
    assert response.status_code == 200 and response.content == b"ok"
    assert response["Cache-Control"] == "no-store"
    # The same request to a page is redirected to HTTPS or refused for its Host: the probes are exempt.
    assert get("/accounts/login/").status_code in (301, 400)


def test_readiness_checks_the_database_redis_and_migrations(production_like: Any) -> None:
    response = get("/health/ready?checks=database,redis,migrations")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "failing": []}
    detailed = get("/health/ready?checks=database,redis,migrations", token=TOKEN).json()
    assert detailed["checks"]["migrations"] == {"ok": True, "detail": "applied"}
    assert detailed["checks"]["database"]["ok"] and detailed["checks"]["redis"]["ok"]


def test_redis_down_names_the_check_and_hides_the_error_from_anonymous_callers(production_like: Any) -> None:
    production_like.CELERY_BROKER_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    response = get("/health/ready?checks=database,redis")
    assert response.status_code == 503
    assert json.loads(response.content) == {"status": "fail", "failing": ["redis"]}
    detailed = get("/health/ready?checks=database,redis", token=TOKEN).json()
    assert not detailed["checks"]["redis"]["ok"] and "Connection" in detailed["checks"]["redis"]["detail"]
    # A wrong token is an anonymous caller.
    assert "checks" not in get("/health/ready?checks=redis", token="wrong").json()


def test_beat_not_seen_recently_fails_readiness(production_like: Any) -> None:
    production_like.HEALTH_BEAT_MAX_AGE_SECONDS = 300
    beat_seen(at=time.time() - 3600)
    response = get("/health/ready?checks=database,beat")
    assert response.status_code == 503 and response.json()["failing"] == ["beat"]
    detail = get("/health/ready?checks=beat", token=TOKEN).json()["checks"]["beat"]["detail"]
    assert "last seen 3600 s ago" in detail
    # Beat publishing its heartbeat task is the heartbeat.
    beat_heartbeat.apply_async()
    assert get("/health/ready?checks=beat").status_code == 200


def test_an_unapplied_migration_fails_readiness(production_like: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health, "_migrated", False)  # this process may have seen them all applied
    last = MigrationRecorder.Migration.objects.filter(app="audit").order_by("-id").first()
    assert last is not None
    last.delete()  # the test's transaction puts it back
    response = get("/health/ready?checks=database,migrations")
    assert response.status_code == 503 and response.json()["failing"] == ["migrations"]
    detail = get("/health/ready?checks=migrations", token=TOKEN).json()["checks"]["migrations"]["detail"]
    assert detail == f"1 migration(s) not applied, first audit.{last.name}"


def test_an_unknown_check_is_a_400_naming_it(production_like: Any) -> None:
    response = get("/health/ready?checks=database,disk")
    assert response.status_code == 400
    assert "unknown check 'disk'" in response.json()["checks"][0]


def test_everything_ready_with_a_worker_answering_and_beat_seen(production_like: Any, celery_worker: Any) -> None:
    beat_heartbeat.apply_async()
    response = get("/health/ready", token=TOKEN)
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["failing"] == [] and set(body["checks"]) == {"database", "redis", "migrations", "worker", "beat"}
    assert "worker(s) answered" in body["checks"]["worker"]["detail"]


def test_probes_refuse_writes(production_like: Any) -> None:
    assert Client().post("/health/ready", HTTP_HOST=POD_IP).status_code == 405

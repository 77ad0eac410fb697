"""`chain.seal_through`: seal the chain through one committed event, waiting (bounded) for a
running sealer where `seal_pending` gives up at once, and saying why when the event cannot be
sealed (reviews' close checkpoints rely on it: tests/reviews/test_campaign_services.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from audit import chain
from audit import services as audit
from audit.models import AuditEvent, AuditSeal
from tests.audit.trail import events

pytestmark = pytest.mark.django_db(transaction=True)


def _holding_the_lock(superuser_sql: Any) -> None:
    superuser_sql("SELECT pg_advisory_lock(%s)", [chain.SEAL_LOCK])  # the periodic sealer, mid-run


def test_it_waits_for_a_running_sealer_and_seals_through_the_event(superuser_sql: Any) -> None:
    events(2)
    wanted = audit.record(action="test.wanted", actor=None)
    _holding_the_lock(superuser_sql)
    assert chain.seal_pending().sealed == 0  # the periodic path gives up at once
    release = threading.Timer(0.5, superuser_sql, ["SELECT pg_advisory_unlock(%s)", [chain.SEAL_LOCK]])
    release.start()
    try:
        result = chain.seal_through(wanted.pk, timeout=30)
    finally:
        release.join()
    assert result.sealed == 1
    assert chain.head().seq == AuditSeal.objects.get(event_id=wanted.pk).seq == 3


def test_it_refuses_clearly_when_the_lock_is_held_too_long_and_seals_nothing(superuser_sql: Any) -> None:
    events(1)
    wanted = audit.record(action="test.wanted", actor=None)
    _holding_the_lock(superuser_sql)
    try:
        with pytest.raises(ValueError, match=r"held its lock for more than 0\.3 s .*: nothing was sealed; try again"):
            chain.seal_through(wanted.pk, timeout=0.3)
    finally:
        superuser_sql("SELECT pg_advisory_unlock(%s)", [chain.SEAL_LOCK])
    assert not AuditSeal.objects.filter(event_id=wanted.pk).exists()


def test_an_event_it_cannot_seal_is_named_with_the_reason(superuser_sql: Any) -> None:
    events(1)
    superuser_sql(
        """INSERT INTO audit_auditevent (occurred_at, actor_username, source, request_id, action, outcome,
           target_type, target_id, target_repr, changes, reason, metadata, user_agent, mac)
           VALUES (now(), 'mallory', 'web', 'x', 'grant.revoked', 'success', '', '', '', '{}', 'cover-up', '{}', '',
                   repeat('a', 64))"""
    )
    forged = AuditEvent.objects.get(actor_username="mallory")
    with pytest.raises(ValueError, match=rf"through event #{forged.pk}: its MAC is not the application's"):
        chain.seal_through(forged.pk, timeout=5)
    with pytest.raises(ValueError, match=r"through event #999999999: no committed event has that id"):
        chain.seal_through(999_999_999, timeout=5)

"""The control "no superuser provisioning login", end to end: the reconciler reads what the portal's
login is on the real target (TLS, tests/tls_target.py) and the posture page reads what it recorded."""

from __future__ import annotations

from typing import Any

import pytest

from audit.models import AuditEvent
from compliance.controls import compliance_posture
from governance import crypto
from governance.models import DataSource
from governance.services.reconcile import reconcile_source
from tests import tls_target
from tests.provisioning.conftest import ROLE_PREFIX, RUN

pytestmark = pytest.mark.django_db(transaction=True)


def superuser_control() -> Any:
    (found,) = [c for c in compliance_posture().controls if c.key == "no_superuser_login"]
    return found


def test_a_source_reached_as_a_superuser_turns_the_control_red(target_source: DataSource) -> None:
    cluster = tls_target.current()
    reconcile_source(source=target_source)
    run = AuditEvent.objects.filter(action="reconcile.run", target_id=str(target_source.pk)).latest("id")
    assert run.metadata["login"] == {"name": cluster.portal_role, "superuser": False, "bypassrls": False}
    found = superuser_control()
    assert found.status == "pass", found.reason
    assert found.reason == "The portal's login on each of 1 sources is no superuser (read by the reconciler)."

    # The same database, reached as the cluster's superuser: what a quick set-up often does.
    shortcut = DataSource.objects.create(
        name=f"shortcut_{RUN}",
        host=cluster.host,
        port=cluster.port,
        database=target_source.database,
        username="postgres",
        sslmode="verify-full",
        ssl_root_cert=cluster.ca_pem,
        role_prefix=ROLE_PREFIX,
    )
    DataSource.objects.filter(pk=shortcut.pk).update(password_encrypted=crypto.encrypt(cluster.superuser_password))
    shortcut.refresh_from_db()
    found = superuser_control()
    assert found.status == "fail" and f"shortcut_{RUN} (never reconciled)" in found.reason
    reconcile_source(source=shortcut)
    found = superuser_control()
    assert found.status == "fail" and f"shortcut_{RUN} (login postgres is a superuser)" in found.reason, found.reason
    assert target_source.name not in found.reason

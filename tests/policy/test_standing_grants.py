"""Policy as code, acceptance (b) of issue 23: a standing grant added in the YAML is provisioned by
the engine (a real worker) and verified in the real target PostgreSQL (the grantee role can SELECT);
the API refuses to revoke it by hand (409, naming its document); removed from the YAML and applied,
it is revoked on the target (SELECT refused). Every step audited as gitops with its actor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import call_command

from audit.models import AuditEvent
from governance.models import Grant, GrantStatus
from governance.provisioning import principal_for
from governance.services.roles import role_create
from policy.document import to_yaml
from tests.provisioning.conftest import target_can, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("celery_worker"), pytest.mark.worker]
QUERY = "SELECT * FROM finance.ledger"


def run(capsys: Any, *args: str) -> tuple[int, str]:
    """`manage.py policy ARGS` in this process (the worker sees what it commits): (exit code, stdout)."""
    try:
        call_command("policy", *args)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().out


def test_a_standing_grant_is_provisioned_and_revoked_on_the_target(
    target_source: Any, gov_admin: Any, api: Any, tmp_path: Path, capsys: Any
) -> None:
    role = role_create(actor=gov_admin, name="ETL readers", kind="service")
    dataset = f"{target_source.name}:finance.ledger"
    path = tmp_path / "policy.yaml"
    document = {"version": 1, "standing_grants": [{"role": "ETL readers", "dataset": dataset, "level": "read"}]}
    path.write_text(to_yaml(document))
    key = f"role:ETL readers read {dataset}"

    assert run(capsys, "plan", str(path)) == (
        2,
        f"standing_grants\n  + {key}: until open (ten years)\n      (provisioned on the target)\n"
        "1 to create, 0 to change, 0 to remove; grants: 1 to provision, 0 to revoke.\n",
    )
    code, out = run(capsys, "apply", str(path), "--actor", "govadmin")
    assert code == 0 and out.endswith("1 created, 0 changed, 0 removed; grants: 1 provisioned, 0 revoked.\n"), out
    grant = Grant.objects.get(grantee_role=role, source_request__isnull=True)
    wait_for(lambda: Grant.objects.get(pk=grant.pk).status == GrantStatus.ACTIVE)
    db_role = principal_for(source=target_source, role=role).db_role
    assert target_can(target_source.database, db_role, QUERY)
    created = AuditEvent.objects.get(action="grant.created", target_id=str(grant.pk))
    assert (created.source, created.actor_id, created.metadata["standing"]) == ("gitops", gov_admin.pk, True)

    # Applied twice: nothing more.
    assert run(capsys, "plan", str(path)) == (0, "No changes: the portal matches the document.\n")
    assert run(capsys, "apply", str(path), "--actor", "govadmin") == (
        0,
        "No changes: the portal matches the document.\n",
    )
    assert Grant.objects.filter(grantee_role=role).count() == 1

    # Revoked by hand through the API: refused, saying where it is managed; still held.
    response = api(gov_admin, "approve").post(f"/api/v1/grants/{grant.pk}/revoke/", {"reason": "tidy"}, format="json")
    assert response.status_code == 409, response.content
    assert response.json()["error"]["message"].startswith(f"Standing grant {key} is managed in code: policy document")
    assert Grant.objects.get(pk=grant.pk).revoked_at is None

    # Removed from the document: revoked on the target.
    path.write_text(to_yaml({"version": 1, "standing_grants": []}))
    assert run(capsys, "plan", str(path)) == (
        2,
        f"standing_grants\n  - {key}\n      (grant #{grant.pk} revoked on the target)\n"
        "0 to create, 0 to change, 1 to remove; grants: 0 to provision, 1 to revoke.\n",
    )
    code, out = run(capsys, "apply", str(path), "--actor", "govadmin")
    assert code == 0, out
    wait_for(lambda: not target_can(target_source.database, db_role, QUERY))
    revoked = Grant.objects.get(pk=grant.pk)
    assert revoked.status == GrantStatus.REVOKED and revoked.revoked_by == gov_admin
    event = AuditEvent.objects.get(action="grant.revoked", target_id=str(grant.pk))
    assert (event.source, event.actor_id) == ("gitops", gov_admin.pk)
    assert run(capsys, "plan", str(path)) == (0, "No changes: the portal matches the document.\n")
    assert yaml.safe_load(run(capsys, "export", "--section", "standing_grants")[1]) == {
        "version": 1,
        "standing_grants": [],
    }

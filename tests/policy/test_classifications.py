"""Policy as code, acceptance (a) of issue 23: export, change a classification's longest duration in
the YAML, plan shows exactly that (exit 2), apply makes it (audited as gitops, with its actor and the
document), a second plan and apply change nothing (exit 0); then the admin and the API refuse to
change what the document manages, saying where it is managed. Also: an invalid document is one
line and exit 1 with nothing changed; adopt and release are audited."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from governance.models import Classification
from policy.document import HEADER, schema
from policy.export import export_document
from policy.models import ManagedObject
from tests.test_command_output import manage

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
NO_TREATMENT_RULES = {"treatment_rules-TOTAL_FORMS": "0", "treatment_rules-INITIAL_FORMS": "0"}


def policy_state() -> list[tuple[Any, ...]]:
    rows = Classification.objects.order_by("pk").values_list(
        "slug", "name", "max_duration", "min_duration", "approval_stages"
    )
    return [*rows, *ManagedObject.objects.order_by("pk").values_list("kind", "key", "document")]


def test_export_change_plan_apply_and_the_admin_refuses(classifications: Any, gov_admin: Any, tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    exported = manage("policy", "export", str(path), "--section", "classifications")
    assert exported.returncode == 0, exported.stderr
    text = path.read_text()
    assert text.startswith(HEADER + "version: 1\nclassifications:\n- slug: public\n")
    assert "  max_duration: 90 days\n" in text  # Confidential's longest grant, in words
    assert "id:" not in text and "pk" not in text
    # Deterministic: a second export is the same bytes.
    again = manage("policy", "export", "--section", "classifications")
    assert again.stdout == text

    # Apply the export as it is: nothing of the policy changes; the four levels become managed.
    first = manage("policy", "plan", str(path))
    assert (first.returncode, first.stdout) == (
        2,
        "No changes: the portal matches the document. 4 objects to mark as managed in code.\n",
    )
    assert manage("policy", "apply", str(path), "--actor", "govadmin").returncode == 0

    path.write_text(text.replace("  max_duration: 90 days\n", "  max_duration: 30 days\n", 1))
    planned = manage("policy", "plan", str(path))
    assert planned.returncode == 2, planned.stderr
    assert planned.stdout == (
        "classifications\n  ~ confidential: max_duration 90 days → 30 days\n0 to create, 1 to change, 0 to remove.\n"
    )
    applied = manage("policy", "apply", str(path), "--actor", "govadmin")
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.endswith("0 created, 1 changed, 0 removed.\n")
    confidential = Classification.objects.get(slug="confidential")
    assert confidential.max_duration == dt.timedelta(days=30)

    event = AuditEvent.objects.get(action="classification.updated")
    assert event.source == "gitops" and event.actor_id == gov_admin.pk
    assert event.changes == {"max_duration": [90 * 86400, 30 * 86400]}
    digest = event.metadata["document"]
    assert digest.startswith("sha256:") and event.metadata["via"] == "gitops" and event.metadata["door"] == "cli"
    assert AuditEvent.objects.filter(action="policy.applied", source="gitops", actor=gov_admin).count() == 2

    # Twice: nothing to change, nothing written.
    before = AuditEvent.objects.count()
    second = manage("policy", "plan", str(path))
    assert (second.returncode, second.stdout) == (0, "No changes: the portal matches the document.\n")
    third = manage("policy", "apply", str(path), "--actor", "govadmin")
    assert (third.returncode, third.stdout) == (0, "No changes: the portal matches the document.\n")
    assert AuditEvent.objects.count() == before

    # The admin refuses to change it, and says where it is managed.
    client = Client()
    client.force_login(gov_admin)
    url = reverse("admin:governance_classification_change", args=[confidential.pk])
    response = client.post(
        url,
        {
            "name": "Confidential",
            "description": confidential.description,
            "approval_stages": confidential.approval_stages,
            "min_duration_0": "1",
            "min_duration_1": "hours",
            "max_duration_0": "60",
            "max_duration_1": "days",
            "justification_required": "on" if confidential.justification_required else "",
            "allow_pii_access": "on",
            **NO_TREATMENT_RULES,
        },
        follow=True,
    )
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert any(
        m.startswith(f"Classification confidential is managed in code: policy document {digest} (policy.yaml).")
        for m in shown
    ), shown
    assert "manage.py policy release classification confidential" in response.content.decode()
    confidential.refresh_from_db()
    assert confidential.max_duration == dt.timedelta(days=30)
    refused = AuditEvent.objects.get(action="classification.update", outcome="denied")
    assert refused.actor_id == gov_admin.pk

    # Released, the admin may change it again (audited); adopted back, it is refused again.
    call_command("policy", "release", "classification", "confidential", "--actor", "govadmin", "--reason", "hand edit")
    assert AuditEvent.objects.filter(action="policy.released", actor=gov_admin).count() == 1
    call_command("policy", "adopt", "classification", "confidential", "--actor", "govadmin")
    assert AuditEvent.objects.filter(action="policy.adopted", actor=gov_admin).count() == 1
    with pytest.raises(CommandError, match="already managed in code"):
        call_command("policy", "adopt", "classification", "confidential", "--actor", "govadmin")


def test_an_invalid_document_is_one_line_and_changes_nothing(
    classifications: Any, gov_admin: Any, tmp_path: Path
) -> None:
    from policy.document import to_yaml

    path = tmp_path / "policy.yaml"
    good = to_yaml(export_document(("classifications",)))
    before = policy_state()
    cases = [
        (good.replace("max_duration: 90 days", "max_duration: ninety days"),
         "classifications[2].max_duration: 'ninety days' is not a duration in words (`12 hours`, `30 days`)."),
        (good.replace("max_duration: 90 days", "max_duration: 5000 days"),
         "classifications[2].max_duration: The longest duration must be at most 3650 days."),
        (good.replace("- slug: internal", "- slug: internul"),
         "classifications[1].slug: there is no classification 'internul' (known: confidential, internal, public, "
         "restricted)."),
        (good.replace("max_duration: 90 days", "max_duration: 90 days\n  colour: red"),
         "classifications[2].colour: not a field here"),
        ("version: 1\nclassifications: [\n", "document: not YAML"),
    ]  # fmt: skip
    for text, message in cases:
        path.write_text(text)
        for action in (["plan", str(path)], ["apply", str(path), "--actor", "govadmin"]):
            result = manage("policy", *action)
            lines = result.stderr.strip().splitlines()
            assert result.returncode == 1 and len(lines) == 1, result.stderr
            assert lines[0].startswith(f"CommandError: {message}"), lines
    assert policy_state() == before
    assert not AuditEvent.objects.filter(source="gitops").exclude(outcome="denied").exists()


def test_the_published_schema_is_the_apps(classifications: Any) -> None:
    import json

    assert schema() == json.loads((ROOT / "docs" / "schemas" / "policy-as-code.schema.json").read_text())

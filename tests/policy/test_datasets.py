"""Policy as code, the `datasets` section (issue 23): export, change a dataset's classification and
add a steward in the YAML, plan shows exactly that (exit 2), apply makes it through the catalog
services (audited as gitops, with the actor), a second plan changes nothing (exit 0); the service
then refuses to change that dataset (409, naming the document) until it is released. A dataset the
document does not name is left alone; one the catalog does not have is refused by path, one line,
nothing changed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from audit.models import AuditEvent
from governance.errors import ConflictError
from governance.models import Dataset
from governance.selectors.catalog import dataset_stewards
from governance.services.catalog import dataset_steward_add, dataset_update
from policy.document import DocumentError
from policy.models import ManagedObject
from policy.plans import plan
from tests.test_command_output import manage

pytestmark = pytest.mark.django_db(transaction=True)


def test_export_change_plan_apply_and_the_service_refuses(
    make_dataset: Any, make_user: Any, owner: Any, gov_admin: Any, classifications: Any, tmp_path: Path
) -> None:
    ledger = make_dataset("ledger", owner=owner)
    orders = make_dataset("orders", classification="public")
    make_user("steward1")
    gone = make_dataset("old_table")
    Dataset.objects.filter(pk=gone.pk).update(is_present=False)

    path = tmp_path / "policy.yaml"
    exported = manage("policy", "export", str(path), "--section", "datasets")
    assert exported.returncode == 0, exported.stderr
    text = path.read_text()
    assert text.endswith(
        "datasets:\n"
        "- dataset: warehouse:public.ledger\n  owner: owner\n  stewards: []\n  classification: internal\n"
        "- dataset: warehouse:public.orders\n  owner: null\n  stewards: []\n  classification: public\n"
    ), text  # sorted by key, no id, the vanished dataset left out
    assert manage("policy", "export", "--section", "datasets").stdout == text  # deterministic

    # Confidential and a steward for the ledger; orders no longer named (left alone, not removed).
    changed = text.split("- dataset: warehouse:public.orders")[0]
    changed = changed.replace(
        "  stewards: []\n  classification: internal\n", "  stewards:\n  - steward1\n  classification: confidential\n"
    )
    path.write_text(changed)
    planned = manage("policy", "plan", str(path))
    assert (planned.returncode, planned.stdout) == (
        2,
        "datasets\n"
        '  ~ warehouse:public.ledger: classification internal → confidential; stewards [] → ["steward1"]\n'
        "0 to create, 1 to change, 0 to remove. 1 object to mark as managed in code.\n",
    ), planned.stderr

    applied = manage("policy", "apply", str(path), "--actor", "govadmin")
    assert applied.returncode == 0, applied.stderr
    ledger.refresh_from_db()
    assert ledger.declared_classification.slug == "confidential"
    assert ledger.classification.slug == "confidential"  # lineage followed at once
    assert list(dataset_stewards(ledger).values_list("username", flat=True)) == ["steward1"]
    updated = AuditEvent.objects.get(action="dataset.updated", target_id=str(ledger.pk))
    added = AuditEvent.objects.get(action="dataset.steward_added", target_id=str(ledger.pk))
    for event in (updated, added):
        assert (event.source, event.actor_id, event.metadata["via"]) == ("gitops", gov_admin.pk, "gitops")
    digest = updated.metadata["document"]
    assert ManagedObject.objects.get(kind="dataset").key == "warehouse:public.ledger"

    second = manage("policy", "plan", str(path))
    assert (second.returncode, second.stdout) == (0, "No changes: the portal matches the document.\n")

    # Managed: the service refuses to reclassify it or add a steward, naming the document (409).
    for attempt in (
        lambda: dataset_update(dataset=ledger, actor=gov_admin, classification=classifications["internal"]),
        lambda: dataset_steward_add(dataset=ledger, user=gov_admin, actor=gov_admin),
    ):
        with pytest.raises(ConflictError) as refused:
            attempt()
        assert refused.value.code == "managed_in_code"
        assert str(refused.value.message).startswith(
            f"Dataset warehouse:public.ledger is managed in code: policy document {digest} (policy.yaml)."
        )
    ledger.refresh_from_db()
    assert ledger.declared_classification.slug == "confidential"
    assert AuditEvent.objects.filter(action="dataset.update", outcome="denied", actor=gov_admin).count() == 1
    # The admin's change page says so on opening.
    client = Client()
    client.force_login(gov_admin)
    response = client.get(reverse("admin:governance_dataset_change", args=[ledger.pk]))
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    assert any("manage.py policy release dataset 'warehouse:public.ledger'" in m for m in shown), shown

    # The dataset the document left out is not managed: the portal changes it as before.
    dataset_update(dataset=orders, actor=gov_admin, classification=classifications["internal"])

    # Released, it may be changed again; adopted back by its key, refused again.
    call_command("policy", "release", "dataset", "warehouse:public.ledger", "--actor", "govadmin")
    dataset_steward_add(dataset=ledger, user=gov_admin, actor=gov_admin)
    call_command("policy", "adopt", "dataset", "warehouse:public.ledger", "--actor", "govadmin")
    with pytest.raises(CommandError, match="already managed in code"):
        call_command("policy", "adopt", "dataset", "warehouse:public.ledger", "--actor", "govadmin")


def test_an_unknown_dataset_is_one_line_naming_its_path(
    make_dataset: Any, owner: Any, gov_admin: Any, tmp_path: Path
) -> None:
    ledger = make_dataset("ledger")
    make_dataset("people", classification="confidential", owner=owner, pii={"id": "email"})
    path = tmp_path / "policy.yaml"
    path.write_text(
        "version: 1\ndatasets:\n"
        "- dataset: warehouse:public.ledger\n  classification: confidential\n"
        "- dataset: warehouse:public.nothing\n  classification: public\n"
    )
    for action in (["plan", str(path)], ["apply", str(path), "--actor", "govadmin"]):
        result = manage("policy", *action)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1, result.stderr
        assert lines[0] == (
            "CommandError: datasets[1].dataset: there is no dataset warehouse:public.nothing in the catalog."
        ), lines
    # The other refusals of the section, by path, before anything is written.
    for entry, message in [
        ({"dataset": "warehouse:public.ledger", "classification": "secret"},
         "datasets[0].classification: there is no classification 'secret' (known: "),
        ({"dataset": "warehouse:public.people", "classification": "public"},
         "datasets[0].classification: it has confirmed sensitive columns: at least "),
        ({"dataset": "warehouse:public.people", "stewards": ["owner"]},
         "datasets[0].stewards[0]: owner is the owner (the owner is always a steward)."),
        ({"dataset": "warehouse:public.ledger", "owner": "nobody"}, "datasets[0].owner: there is no active user"),
    ]:  # fmt: skip
        with pytest.raises(DocumentError) as refused:
            plan({"version": 1, "datasets": [entry]})
        assert refused.value.message.startswith(message), refused.value.message
    ledger.refresh_from_db()
    assert ledger.declared_classification.slug == "internal"
    assert not ManagedObject.objects.exists()
    assert not AuditEvent.objects.filter(source="gitops").exclude(outcome="denied").exists()

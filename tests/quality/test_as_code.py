"""Checks as code (docs/quality.md#checks-as-code) on the real quality source: export, edit the YAML,
plan, apply through the services (audited, marked as from code), apply again (nothing), and every
refusal naming its path with nothing changed. Also the command's exit codes, the API and the doc's
own example file."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import CommandError, call_command

from audit.models import AuditEvent
from governance.errors import NotPermitted
from governance.models import Dataset
from quality import as_code
from quality.models import IntegrityWatch, QualityCheck
from quality.services.checks import quality_check_create, quality_check_review
from quality.services.integrity import integrity_watch_set

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def define(dataset: Dataset, actor: Any) -> None:
    quality_check_create(actor=actor, dataset=dataset, name="email present", kind="completeness", column="email",
                         threshold=0.1, description="Ten customers signed up by phone.")  # fmt: skip
    quality_check_create(actor=actor, dataset=dataset, name="country known", kind="allowed_values", column="country",
                         params={"values": ["UK", "FR", "DE"]})  # fmt: skip
    quality_check_create(actor=actor, dataset=dataset, name="score in range", kind="range", column="score",
                         params={"min": 0, "max": None}, enabled=False)  # fmt: skip


@pytest.fixture
def api() -> Any:
    """An API client with a token of `user` holding every scope but admin (`scopes` to narrow it)."""
    from rest_framework.test import APIClient

    from accounts.tokens import api_token_create

    def make(user: Any, scopes: str = "read,request,approve") -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, scopes=scopes, name='t').secret}")
        return client

    return make


def state() -> list[tuple[Any, ...]]:
    """Every check and watch as stored, to show that a refusal changed nothing."""
    fields = ("dataset_id", "name", "kind", "column", "params", "threshold", "enabled", "description", "reviewed_by")
    checks = QualityCheck.objects.order_by("pk").values_list(*fields)
    return [*checks, *IntegrityWatch.objects.order_by("pk").values_list("dataset_id", "mode", "key_column")]


def events_after(pk: int) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(pk__gt=pk).order_by("pk"))


def last_event() -> int:
    return AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def test_export_edit_plan_apply_and_apply_again(customers: Any, owner: Any) -> None:
    define(customers, owner)
    key = f"{customers.source.name}:shop.customers"
    text = as_code.to_yaml(as_code.export_checks([customers]))
    # Deterministic, no ids, no defaults: sorted by name, only what differs from a default.
    assert text == (
        as_code.document.HEADER + "version: 1\ndatasets:\n"
        f"- dataset: {key}\n"
        "  checks:\n"
        "  - name: country known\n    kind: allowed_values\n    column: country\n"
        "    params:\n      values:\n      - UK\n      - FR\n      - DE\n"
        "  - name: email present\n    kind: completeness\n    column: email\n    threshold: 0.1\n"
        "    description: Ten customers signed up by phone.\n"
        "  - name: score in range\n    kind: range\n    column: score\n    params:\n      min: 0\n    enabled: false\n"
    )
    assert as_code.plan(as_code.load_yaml(text)).changes == 0  # the export is what is stored

    edited = text.replace("threshold: 0.1", "threshold: 0.25")
    planned = as_code.plan(as_code.load_yaml(edited))
    assert planned.as_dict()["datasets"] == [
        {
            "dataset": key,
            "created": [],
            "changed": [{"name": "email present", "fields": {"threshold": [0.1, 0.25]}}],
            "removed": [],
            "integrity": None,
        }
    ]
    assert "  ~ email present: threshold 0.1 → 0.25" in planned.render()
    assert QualityCheck.objects.get(name="email present").threshold == 0.1  # a plan changes nothing

    before = last_event()
    as_code.apply(planned, owner)
    assert QualityCheck.objects.get(name="email present").threshold == 0.25
    (event,) = events_after(before)
    assert (event.action, event.actor, event.outcome) == ("quality_check.updated", owner, "success")
    assert event.changes == {"threshold": [0.1, 0.25]}
    assert event.metadata["via"] == "code" and event.metadata["document"] == planned.digest

    # The same file again: an empty plan, and applying it records nothing.
    again = as_code.plan(as_code.load_yaml(edited))
    assert again.changes == 0 and again.render().startswith("No changes")
    before = last_event()
    as_code.apply(again, owner)
    assert events_after(before) == []
    assert as_code.to_yaml(as_code.export_checks([customers])) == edited


def test_the_file_rules_only_the_datasets_it_names(customers: Any, quality_source: Any, owner: Any) -> None:
    define(customers, owner)
    orders = Dataset.objects.get(source=quality_source, schema="shop", name="orders")
    quality_check_create(actor=owner, dataset=orders, name="ids", kind="uniqueness", column="id")
    document = as_code.export_checks([customers])
    del document["datasets"][0]["checks"][2]  # score in range
    document["datasets"][0]["checks"].append({"name": "rows", "kind": "row_count", "threshold": 10})
    planned = as_code.plan(document)
    (step,) = planned.as_dict()["datasets"]
    assert step["removed"] == [{"name": "score in range"}]
    assert step["created"] == [{"name": "rows", "kind": "row_count", "threshold": 10}]
    assert planned.summary() == "1 to create, 0 to change, 1 to remove."
    before = last_event()
    as_code.apply(planned, owner)
    assert sorted(QualityCheck.objects.filter(dataset=customers).values_list("name", flat=True)) == [
        "country known", "email present", "rows",
    ]  # fmt: skip
    assert QualityCheck.objects.filter(dataset=orders, name="ids").exists()  # not named: untouched
    actions = [(e.action, e.actor_id, e.metadata.get("via")) for e in events_after(before)]
    assert actions == [("quality_check.deleted", owner.pk, "code"), ("quality_check.created", owner.pk, "code")]


@pytest.mark.parametrize(
    ("edit", "path", "words"),
    [
        (
            lambda d: d["datasets"][0]["checks"][1].update(column="nope"),
            "datasets[0].checks[1].column",
            "'nope' is not a column",
        ),
        (
            lambda d: d["datasets"][0].update(dataset="nowhere:shop.customers"),
            "datasets[0].dataset",
            "no dataset nowhere:shop.customers",
        ),
        (
            lambda d: d["datasets"][0]["checks"][2].update(name="email present"),
            "datasets[0].checks[2].name",
            "names datasets[0].checks[1] too",
        ),
        (
            lambda d: d["datasets"][0]["checks"][0].update(kind="vibes"),
            "datasets[0].checks[0].kind",
            "'vibes' is not one of",
        ),
        (lambda d: d["datasets"][0]["checks"][1].update(threshold=2), "datasets[0].checks[1].threshold", "from 0 to 1"),
        (
            lambda d: d["datasets"][0]["checks"][1].update(threshold="0.2"),
            "datasets[0].checks[1].threshold",
            "not of type 'number'",
        ),
        (lambda d: d["datasets"][0]["checks"][0].pop("kind"), "datasets[0].checks[0].kind", "required"),
        (
            lambda d: d["datasets"][0]["checks"][0].update(colour="red"),
            "datasets[0].checks[0].colour",
            "not a field here",
        ),
        (
            lambda d: d["datasets"][0]["checks"][0]["params"].update(values=[]),
            "datasets[0].checks[0].params.values",
            "a list of 1 to",
        ),
        (
            lambda d: d["datasets"].append(dict(d["datasets"][0])),
            "datasets[1].dataset",
            "names the dataset of datasets[0] again",
        ),
        (
            lambda d: d["datasets"][0].update(integrity={"mode": "append_only", "key_column": "nope"}),
            "datasets[0].integrity.key_column",
            "growing key column",
        ),
        (lambda d: d.update(version=2), "version", "2 is not one of [1]"),
    ],
)
def test_a_refused_file_names_the_path_and_changes_nothing(
    customers: Any, owner: Any, edit: Any, path: str, words: str
) -> None:
    define(customers, owner)
    document = as_code.export_checks([customers])
    edit(document)
    document["datasets"][0]["checks"][0]["threshold"] = 0.5  # a valid change beside the bad one
    stored, before = state(), last_event()
    with pytest.raises(as_code.DocumentError) as refused:
        as_code.apply(as_code.plan(document), owner)
    assert refused.value.field == path, refused.value.problems
    assert words in refused.value.message and refused.value.message.startswith(f"{path}: ")
    assert state() == stored and events_after(before) == []


def test_a_plan_made_before_someone_changed_the_checks_is_refused(customers: Any, owner: Any) -> None:
    from governance.errors import ConflictError
    from quality.services.checks import quality_check_update

    define(customers, owner)
    document = as_code.export_checks([customers])
    document["datasets"][0]["checks"][1]["threshold"] = 0.3
    planned = as_code.plan(document)
    quality_check_update(actor=owner, check=QualityCheck.objects.get(name="country known"), threshold=0.2)
    stored = state()
    with pytest.raises(ConflictError, match="changed since this plan was made"):
        as_code.apply(planned, owner)
    assert state() == stored


def test_yaml_that_is_not_a_plain_document_is_refused(customers: Any) -> None:
    cases: list[tuple[str | bytes, str, str]] = [
        ("version: [1\n", "document", "not YAML"),
        ("a: &x [1]\nb: *x\n", "document", "anchors and aliases"),
        ("[" * 40 + "]" * 40, "document", "nested deeper than 32"),
        ("version: !!binary aGk=\n", "version", "bytes is not a JSON value"),
        (b"version: \xff\n", "document", "not UTF-8"),
    ]
    for text, field, words in cases:
        with pytest.raises(as_code.DocumentError) as refused:
            as_code.load_yaml(text)
        assert refused.value.field == field and words in refused.value.message, refused.value.message
    # Dates stay text (a range's bound), as in JSON.
    assert as_code.load_yaml("min: 2024-01-31\n") == {"min": "2024-01-31"}


def test_someone_without_rights_is_refused_naming_the_dataset(customers: Any, owner: Any, analyst: Any) -> None:
    define(customers, owner)
    document = as_code.export_checks([customers])
    document["datasets"][0]["checks"][0]["threshold"] = 0.5
    stored, before = state(), last_event()
    with pytest.raises(NotPermitted) as refused:
        as_code.apply(as_code.plan(document), analyst)
    key = f"{customers.source.name}:shop.customers"
    assert refused.value.field == "datasets[0].dataset" and key in refused.value.message
    assert state() == stored
    (event,) = events_after(before)
    assert (event.action, event.outcome, event.actor) == ("quality_checks.apply", "denied", analyst)
    assert event.metadata["via"] == "code" and event.metadata["datasets"] == [key]


def test_owner_written_sql_from_a_file_still_waits_for_a_review(customers: Any, owner: Any, gov_admin: Any) -> None:
    key = f"{customers.source.name}:shop.customers"
    sql = {"sql": "SELECT * FROM shop.customers WHERE score < 0"}
    document: dict[str, Any] = {"version": 1, "datasets": [{"dataset": key, "checks": [
        {"name": "no negative score", "kind": "custom_sql", "params": sql}]}]}  # fmt: skip
    planned = as_code.plan(document)
    assert "runs once someone other than its author has reviewed it" in planned.render()
    as_code.apply(planned, owner)
    check = QualityCheck.objects.get(name="no negative score")
    assert check.awaiting_review and check.created_by == owner
    with pytest.raises(NotPermitted):
        quality_check_review(actor=owner, check=check)  # its author, through the file
    quality_check_review(actor=gov_admin, check=check)
    # The file cannot carry a review, and an unchanged SQL keeps it ...
    assert as_code.plan(as_code.export_checks([customers])).changes == 0
    assert "reviewed" not in json.dumps(as_code.export_checks([customers]))
    # ... while new SQL from the file withdraws it, as on the portal.
    document["datasets"][0]["checks"][0]["params"] = {"sql": "SELECT * FROM shop.customers WHERE score > 1000"}
    as_code.apply(as_code.plan(document), owner)
    assert QualityCheck.objects.get(name="no negative score").awaiting_review


def test_integrity_watches_are_set_from_the_file_and_never_removed(quality_source: Any, owner: Any) -> None:
    orders = Dataset.objects.get(source=quality_source, schema="shop", name="orders")
    key = f"{quality_source.name}:shop.orders"
    document: dict[str, Any] = {"version": 1, "datasets": [{"dataset": key, "integrity": {"mode": "immutable"}}]}
    as_code.apply(as_code.plan(document), owner)
    assert IntegrityWatch.objects.get(dataset=orders).mode == "immutable"
    document["datasets"][0]["integrity"] = {"mode": "append_only", "key_column": "id"}
    planned = as_code.plan(document)
    assert planned.as_dict()["datasets"][0]["integrity"]["before"] == {"mode": "immutable"}
    as_code.apply(planned, owner)
    assert (IntegrityWatch.objects.get(dataset=orders).key_column, as_code.plan(document).changes) == ("id", 0)
    del document["datasets"][0]["integrity"]
    with pytest.raises(as_code.DocumentError) as refused:
        as_code.plan(document)
    assert refused.value.field == "datasets[0].integrity" and "never removed" in refused.value.message
    integrity_watch_set(actor=owner, dataset=orders, mode="immutable")  # still the services' to change
    assert "integrity:\n    mode: immutable\n" in as_code.to_yaml(as_code.export_checks([orders]))


def test_the_command_exports_plans_and_applies_with_exit_codes(
    customers: Any, owner: Any, analyst: Any, tmp_path: Path, capsys: Any
) -> None:
    from tests.test_command_output import manage

    define(customers, owner)
    key = f"{customers.source.name}:shop.customers"
    call_command("quality_checks", "export", "--dataset", key)
    exported = capsys.readouterr().out
    assert exported == as_code.to_yaml(as_code.export_checks([customers]))
    path = tmp_path / "checks.yaml"
    path.write_text(exported)
    unchanged = manage("quality_checks", "plan", str(path))
    assert (unchanged.returncode, unchanged.stdout) == (0, "No changes: the 1 dataset named matches the file.\n")

    path.write_text(exported.replace("threshold: 0.1", "threshold: 0.3"))
    changed = manage("quality_checks", "plan", str(path))
    assert changed.returncode == 2, changed.stderr
    assert changed.stdout == f"{key}\n  ~ email present: threshold 0.1 → 0.3\n0 to create, 1 to change, 0 to remove.\n"

    with pytest.raises(SystemExit) as exited:
        call_command("quality_checks", "plan", str(path), "--actor", "analyst")
    assert exited.value.code == 2
    assert capsys.readouterr().out.endswith(f"Apply would be refused: you may not change the checks of {key}.\n")
    refusal = f"datasets[0].dataset: analyst may not change the quality checks of {key}"
    with pytest.raises(CommandError, match=re.escape(refusal)):
        call_command("quality_checks", "apply", str(path), "--actor", "analyst")
    call_command("quality_checks", "apply", str(path), "--actor", "owner")
    assert capsys.readouterr().out.endswith("0 created, 1 changed, 0 removed.\n")
    assert QualityCheck.objects.get(name="email present").threshold == 0.3
    assert AuditEvent.objects.filter(action="quality_check.updated", source="cli", metadata__via="code").count() == 1

    path.write_text(exported.replace("column: email", "column: mail"))
    bad = manage("quality_checks", "plan", str(path))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert bad.stderr.strip().splitlines() == [
        "CommandError: datasets[0].checks[1].column: 'mail' is not a column of this dataset."
    ]  # fmt: skip


def test_the_api_exports_plans_and_applies(customers: Any, owner: Any, analyst: Any, api: Any) -> None:
    define(customers, owner)
    key = f"{customers.source.name}:shop.customers"
    exported = api(owner).get("/api/v1/quality/as-code/", {"dataset": key}, HTTP_ACCEPT="application/yaml")
    assert exported.status_code == 200 and exported["Content-Type"].startswith("application/yaml")
    text = exported.content.decode()
    assert text == as_code.to_yaml(as_code.export_checks([customers]))
    document = api(owner).get("/api/v1/quality/as-code/", {"dataset": key}).json()
    assert document == yaml.safe_load(text)

    edited = text.replace("threshold: 0.1", "threshold: 0.2")
    planned = api(analyst).post("/api/v1/quality/as-code/plan/", edited, content_type="application/yaml")
    assert planned.status_code == 200, planned.content
    assert planned.json()["changes"] == 1 and planned.json()["summary"] == "0 to create, 1 to change, 0 to remove."
    assert planned.json()["refused"] == [key]  # said before trying
    refused = api(analyst).post("/api/v1/quality/as-code/apply/", edited, content_type="application/yaml")
    assert refused.status_code == 403 and refused.json()["error"]["field"] == "datasets[0].dataset"
    applied = api(owner).post("/api/v1/quality/as-code/apply/", edited, content_type="application/yaml")
    assert applied.status_code == 200 and applied.json()["summary"] == "0 created, 1 changed, 0 removed."
    event = AuditEvent.objects.get(action="quality_check.updated")
    assert (event.actor, event.source, event.metadata["via"]) == (owner, "api", "code")
    again = api(owner).post("/api/v1/quality/as-code/apply/", yaml.safe_load(edited), format="json")
    assert again.json()["changes"] == 0 and AuditEvent.objects.filter(action="quality_check.updated").count() == 1

    document["datasets"][0]["checks"][1]["threshold"] = -1
    bad = api(owner).post("/api/v1/quality/as-code/plan/", document, format="json")
    assert bad.status_code == 400
    assert bad.json()["error"]["field"] == "datasets[0].checks[1].threshold"
    message = bad.json()["error"]["message"]
    assert message.startswith("datasets[0].checks[1].threshold: -1 is less than the minimum of 0")
    unknown = api(owner).get("/api/v1/quality/as-code/", {"dataset": "nowhere:a.b"})
    assert unknown.status_code == 400 and unknown.json()["error"]["field"] == "dataset"
    published = api(owner).get("/api/v1/quality/as-code/schema/").json()
    assert published == json.loads((ROOT / "docs" / "schemas" / "quality-checks.schema.json").read_text())


def test_the_published_schema_is_the_one_the_portal_validates_with() -> None:
    published = ROOT / "docs" / "schemas" / "quality-checks.schema.json"
    assert published.read_text() == as_code.document.SCHEMA_PATH.read_text(), "copy the schema to docs/schemas/"


def test_the_docs_example_file_applies_as_written(quality_source: Any, owner: Any) -> None:
    """The example of docs/quality.md#checks-as-code, its source renamed to the test's: it plans and
    applies cleanly, a second plan is empty, and an export prints it back exactly."""
    text = (ROOT / "docs" / "quality.md").read_text()
    block = re.search(r"## Checks as code.*?```yaml\n(.*?)```", text, re.S)
    assert block, "docs/quality.md lost its checks-as-code example"
    example = block.group(1).replace("warehouse:", f"{quality_source.name}:")
    planned = as_code.plan(as_code.load_yaml(example))
    assert planned.changes > 0
    as_code.apply(planned, owner)
    assert as_code.plan(as_code.load_yaml(example)).changes == 0
    named = [Dataset.objects.get(source=quality_source, schema="shop", name=n) for n in ("customers", "orders")]
    assert as_code.to_yaml(as_code.export_checks(named)) == example

"""The layering that import-linter cannot see on its own (the contracts are in pyproject.toml and run
by `make lint`): the contract lists stay complete, kinds are named in one place, and the messages
the services publish by name reach real tasks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from governance.backends import KINDS, backend_for
from governance.models import DataSource, SourceKind
from governance.services import publishing

ROOT = Path(__file__).resolve().parent.parent


def _contract(contract_id: str) -> dict[str, Any]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return next(c for c in config["contracts"] if c.get("id") == contract_id)


def _governance_children() -> set[str]:
    names = {p.stem for p in (ROOT / "governance").glob("*.py") if p.stem != "__init__"}
    names |= {p.parent.name for p in (ROOT / "governance").glob("*/__init__.py")}
    return {f"governance.{name}" for name in names}


def test_the_adapters_contract_forbids_every_other_module_of_governance() -> None:
    forbidden = set(_contract("adapters-free-of-django")["forbidden_modules"])
    missing = _governance_children() - {"governance.provisioners"} - forbidden
    assert not missing, f"add {sorted(missing)} to the contract's forbidden_modules in pyproject.toml"


def test_source_kinds_are_named_only_by_the_models_and_the_backend_registry() -> None:
    pattern = re.compile(r"SourceKind\.(AWS|POSTGRESQL)")
    offenders = []
    for package in ("governance", "accounts", "audit", "notifications", "compliance"):
        for path in (ROOT / package).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if "/migrations/" in rel or rel.startswith("governance/models/") or rel == "governance/backends.py":
                continue
            offenders += [
                f"{rel}:{n}" for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)
            ]
    assert not offenders, "ask governance.backends.backend_for(source) instead: " + ", ".join(offenders)


def test_every_source_kind_has_a_backend() -> None:
    assert set(KINDS) == set(SourceKind.values)
    for kind in SourceKind.values:
        assert backend_for(DataSource(name="x", kind=kind)).kind == kind


def test_every_message_the_services_publish_names_a_registered_task() -> None:
    from config.celery import app
    from notifications import publishing as notification_publishing

    app.loader.import_default_modules()  # what a worker does at start-up: governance.tasks, notifications.tasks
    names = (*publishing.TASK_NAMES, *notification_publishing.TASK_NAMES)
    missing = [name for name in names if name not in app.tasks]
    assert not missing, f"no task registered as {missing} (governance/tasks.py, notifications/tasks.py)"


def test_notification_tasks_go_to_their_own_queue_and_beat_names_real_tasks() -> None:
    """An email never waits in front of a provisioning job (CELERY_TASK_ROUTES); every beat entry
    names a registered task."""
    from django.conf import settings

    from config.celery import app
    from notifications import publishing as notification_publishing

    app.loader.import_default_modules()
    for name in notification_publishing.TASK_NAMES:
        assert app.amqp.router.route({}, name)["queue"].name == notification_publishing.QUEUE
    assert app.amqp.router.route({}, publishing.RUN_PROVISIONING_JOB)["queue"].name == "celery"
    unknown = [e["task"] for e in settings.CELERY_BEAT_SCHEDULE.values() if e["task"] not in app.tasks]
    assert not unknown

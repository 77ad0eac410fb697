"""Column treatment policy and the per-source governed schema (issue 20): every write here, each with
its audit event in the same transaction."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from django.db import transaction

from accounts.roles import is_governance_admin
from audit import services as audit

from .. import crypto
from ..errors import InvalidInput, NotPermitted
from ..managed import refuse_if_managed
from ..models import (
    STAGE_ORDER,
    TREATMENT_ORDER,
    Classification,
    DataSource,
    GovernedSchema,
    SensitiveTag,
    TreatmentRule,
)
from .common import refusal_recorded

RULE_FIELDS = ("tag", "treatment", "is_default", "stage")


def treatment_rules_set(
    *, classification: Classification, actor: Any, rules: Iterable[dict[str, Any]], reason: str = ""
) -> list[TreatmentRule]:
    """Replace the classification's treatment rules with ``rules`` (dicts of tag, treatment,
    is_default, stage). Refused on the field ``treatment_rules``: an unknown kind, treatment or
    stage, the same (kind, treatment) twice, or two defaults for one kind."""
    with refusal_recorded(action="classification.treatments_set", actor=actor, target=classification):
        with transaction.atomic():
            if not (is_governance_admin(actor) or getattr(actor, "is_superuser", False)):
                raise NotPermitted("Only governance admins can change the approval policy.")
            obj = Classification.objects.select_for_update().get(pk=classification.pk)
            refuse_if_managed(obj)
            wanted = [_checked({k: r.get(k, "") for k in RULE_FIELDS}) for r in rules]
            seen: set[tuple[str, str]] = set()
            defaults: set[str] = set()
            for r in wanted:
                kind = r["tag"] or "any PII"
                if (r["tag"], r["treatment"]) in seen:
                    raise InvalidInput(f"{r['treatment']} is listed twice for {kind}.", field="treatment_rules")
                seen.add((r["tag"], r["treatment"]))
                if r["is_default"]:
                    if r["tag"] in defaults:
                        raise InvalidInput(f"{kind} has two default treatments.", field="treatment_rules")
                    defaults.add(r["tag"])
            before = sorted(_row(r) for r in obj.treatment_rules.all())
            obj.treatment_rules.all().delete()
            made = TreatmentRule.objects.bulk_create([TreatmentRule(classification=obj, **r) for r in wanted])
            after = sorted(_row(r) for r in made)
            if before != after:
                audit.record(
                    action="classification.treatments_updated",
                    actor=actor,
                    target=obj,
                    changes={"treatment_rules": [before, after]},
                    reason=reason,
                )
    return made


def _checked(rule: dict[str, Any]) -> dict[str, Any]:
    if rule["tag"] and rule["tag"] not in SensitiveTag.values:
        raise InvalidInput(f"Unknown PII kind {rule['tag']!r}.", field="treatment_rules")
    if rule["treatment"] not in TREATMENT_ORDER:
        raise InvalidInput(f"Unknown treatment {rule['treatment']!r}.", field="treatment_rules")
    if rule["stage"] and rule["stage"] not in STAGE_ORDER:
        raise InvalidInput(f"Unknown approval stage {rule['stage']!r}.", field="treatment_rules")
    return {**rule, "is_default": bool(rule["is_default"]), "stage": rule["stage"] or ""}


def _row(rule: TreatmentRule) -> str:
    extra = (" default" if rule.is_default else "") + (f" +{rule.stage}" if rule.stage else "")
    return f"{rule.tag or 'any'}:{rule.treatment}{extra}"


def governed_schema_ensure(*, source: DataSource, actor: Any) -> GovernedSchema:
    """The source's governed schema settings, made with a new random pseudonym key (32 bytes,
    encrypted) the first time a request asks for a treated column there."""
    with transaction.atomic():
        row, created = GovernedSchema.objects.select_for_update().get_or_create(source=source)
        if created or not row.pseudonym_key_encrypted:
            row.pseudonym_key_encrypted = crypto.encrypt(secrets.token_bytes(32).hex())
            row.save(update_fields=["pseudonym_key_encrypted"])
            audit.record(
                action="governed_schema.key_created",
                actor=actor,
                target=source,
                metadata={"schema": row.schema, "key": crypto.current_key()},
            )
    return row

"""Decisions on many PII suggestions at once: all of them, or none.

The portal's "Confirm selected" / "Reject selected", the API's bulk decide and the admin's actions
call `column_tags_decide`. Each tag is decided by the one-tag service (governance.services.catalog:
permission, audit event per tag, the classification raise and its event, lineage followed), all in
one transaction: a tag the actor may not decide undoes the others, and the refusal names it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import transaction

from ..errors import DomainError, InvalidInput, NotFound
from ..models import ColumnTag, TagStatus, tag_label
from .catalog import _decide_tag
from .common import refusal_recorded
from .lineage import lineage_lock

MAX_BULK = 100
DECISIONS = {"confirm": TagStatus.CONFIRMED, "reject": TagStatus.REJECTED}


def column_tags_decide(*, ids: Iterable[int], decision: str, actor: Any) -> list[ColumnTag]:
    """Confirm or reject the tags `ids` (in that order), all or none. A refusal is re-raised with
    the tag it concerns named first ("Tag #12 (hr.employees.ssn, US social security number): ...")
    and `details={"id": 12}`; a denied audit event records it after the rollback."""
    ids = list(dict.fromkeys(int(i) for i in ids))
    with refusal_recorded(
        action="column_tag.bulk_decide", actor=actor, metadata={"ids": ids[:MAX_BULK], "decision": decision}
    ):
        if decision not in DECISIONS:
            raise InvalidInput("Choose confirm or reject.", field="decision")
        if not ids:
            raise InvalidInput("Select at least one suggestion.", field="ids")
        if len(ids) > MAX_BULK:
            raise InvalidInput(f"Decide at most {MAX_BULK} suggestions at a time.", field="ids")
        with transaction.atomic():
            found = {t.pk: t for t in ColumnTag.objects.filter(pk__in=ids).select_related("column__dataset")}
            missing = [pk for pk in ids if pk not in found]
            if missing:
                raise NotFound(f"Tag #{missing[0]} does not exist.", field="ids", id=missing[0])
            # Every source's lineage lock first, in one go and in a fixed order (see lineage_lock):
            # deciding tag by tag would otherwise take them one at a time, in the caller's order.
            lineage_lock({t.column.dataset.source_id for t in found.values()})
            decided = []
            for pk in ids:
                tag = found[pk]
                try:
                    decided.append(_decide_tag(tag=tag, actor=actor, status=DECISIONS[decision]))
                except DomainError as exc:
                    dataset = tag.column.dataset
                    where = f"{dataset.schema}.{dataset.name}.{tag.column.name}, {tag_label(tag.tag)}"
                    raise type(exc)(f"Tag #{pk} ({where}): {exc.message}", field="ids", id=pk) from None
    return decided

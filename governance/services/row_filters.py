"""Row filters: defining them (owners, stewards, governance admins), the grantee attributes they
read and the readers the owner confirms (the snapshot a filtered request carries is a read:
`governance/selectors/row_filters.py`).

See docs/privacy.md "Row filters". Parsing and compiling live in
`governance/provisioners/pg_row_filters.py` (no Django); every write here is audited in its
transaction."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from audit import services as audit

from .. import policy
from ..backends import backend_for, has_backend
from ..errors import ConflictError, InvalidInput, NotPermitted
from ..models import Column, Dataset, GranteeAttributes, RowFilter
from ..provisioners import pg_row_filters as pgr
from .common import refusal_recorded


def may_define_row_filters(user: Any, dataset: Dataset) -> bool:
    """The dataset's owners and stewards, governance admins and security officers (as for PII tags)."""
    return policy.may_decide_tags(user, dataset)


def _locked(dataset: Dataset, actor: Any) -> Dataset:
    """The dataset's row, locked (its filters and row security change one at a time), for those who may."""
    dataset = Dataset.objects.select_for_update().get(pk=dataset.pk)
    if not may_define_row_filters(actor, dataset):
        raise NotPermitted("Only the dataset's owners, stewards and governance admins define its row filters.")
    return dataset


def row_filter_parse(dataset: Dataset, expression: str) -> pgr.Expr:
    """The tree of `expression` over the present columns of `dataset`; InvalidInput naming the part."""
    columns = Column.objects.filter(dataset=dataset, is_present=True).values_list("name", flat=True)
    try:
        return pgr.parse(expression, set(columns))
    except pgr.FilterError as exc:
        raise InvalidInput(f"Row filter expression: {exc}", field="expression") from None


def _has_treated_access(dataset: Dataset) -> bool:
    from ..models import AccessRequest, Grant, RequestState, treated

    now = timezone.now()
    return (
        Grant.objects.active(now).filter(dataset=dataset).filter(treated()).exists()
        or AccessRequest.objects.filter(dataset=dataset, state=RequestState.PENDING).filter(treated()).exists()
    )


def row_filter_define(*, dataset: Dataset, name: str, expression: str, actor: Any) -> RowFilter:
    """Create (or change) the filter `name` of `dataset`. The first filter puts the dataset under row
    security (RLS is enabled on the target by the first filtered grant, not here)."""
    name = (name or "").strip()
    with refusal_recorded(action="row_filter.define", actor=actor, target=dataset, metadata={"name": name}):
        with transaction.atomic():
            dataset = _locked(dataset, actor)
            if not name:
                raise InvalidInput("A row filter needs a name.", field="name")
            if not has_backend(dataset.source) or not backend_for(dataset.source).row_filters:
                raise InvalidInput(
                    f"{dataset.source.name} cannot enforce row filters (PostgreSQL sources only).", field="dataset"
                )
            tree = row_filter_parse(dataset, expression)
            if dataset.row_security is None and _has_treated_access(dataset):
                # Governed views read the table as their owner role: once RLS is on, that role (and so
                # every treated grantee) would read no row. The two are not combined yet.
                raise ConflictError(
                    f"{dataset.qualified_name} has grants or pending requests with column treatments: row"
                    " filters and column treatments cannot be combined yet."
                )
            row = RowFilter.objects.filter(dataset=dataset, name=name).first()
            before = None if row is None else row.expression
            try:
                with transaction.atomic():
                    row, _ = RowFilter.objects.update_or_create(
                        dataset=dataset,
                        name=name,
                        defaults={"expression": expression.strip(), "tree": tree, "created_by": actor},
                    )
            except IntegrityError as exc:
                raise ConflictError(f"A row filter named {name!r} was just defined.") from exc
            if dataset.row_security is None:
                dataset.row_security = {"force": False, "confirmed": []}
                dataset.save(update_fields=["row_security"])
            audit.record(
                action="row_filter.defined",
                actor=actor,
                target=row,
                changes={"expression": [before, row.expression]},
                metadata={"dataset": dataset.pk, "compiled": pgr.text_of(_placeholders(tree))},
            )
    return row


def _placeholders(tree: pgr.Expr) -> pgr.Expr:
    return pgr.bind(tree, {a: f"<grantee.{a}>" for a in pgr.attributes(tree)})


def row_security_set(*, dataset: Dataset, force: bool, confirmed: Iterable[str], actor: Any) -> Dataset:
    """The owner's choices for the table under row filters: FORCE (the table owner is bound too) and
    the readers the portal does not manage whom they accept to see no row once RLS is enabled."""
    readers = sorted({r.strip() for r in confirmed if r and r.strip()})
    with refusal_recorded(action="row_security.set", actor=actor, target=dataset):
        with transaction.atomic():
            dataset = _locked(dataset, actor)
            before = dataset.row_security
            dataset.row_security = {"force": bool(force), "confirmed": readers}
            dataset.save(update_fields=["row_security"])
            audit.record(
                action="row_security.set",
                actor=actor,
                target=dataset,
                changes={"row_security": [before, dataset.row_security]},
            )
    return dataset


def grantee_attributes_set(*, user: Any, values: Mapping[str, Any], actor: Any) -> GranteeAttributes:
    """Replace `user`'s attributes (strings) that row filters read as grantee.<name>."""
    with refusal_recorded(action="grantee_attributes.set", actor=actor, target=user):
        with transaction.atomic():
            if not (getattr(actor, "is_superuser", False) or policy.is_governance_admin(actor)):
                raise NotPermitted("Only governance admins set grantee attributes.")
            if not isinstance(values, Mapping):
                raise InvalidInput("Grantee attributes are a map of names to values.", field="values")
            clean = {str(k).strip(): str(v) for k, v in values.items() if str(k).strip()}
            row, _ = GranteeAttributes.objects.select_for_update().get_or_create(user=user)
            before, row.values = row.values, clean
            row.save(update_fields=["values", "updated_at"])
            audit.record(action="grantee_attributes.set", actor=actor, target=user, changes={"values": [before, clean]})
    return row

"""Aggregate queries of an aggregate grant: check, spend, compute in the source, add noise, record.

The order is what keeps the budget honest without holding a database transaction open over the
network (house rule 4):

1. in one transaction: lock the grant's budget row (select_for_update), refuse when the query's
   epsilon exceeds what remains (nothing spent then), spend it, create the query row and its audit
   event. Two concurrent queries serialise on the lock; the second sees the first's spending.
2. outside any transaction: the bounded exact aggregate in the source (privacy.sql), then OpenDP's
   noise (privacy.mechanisms).
3. in a second transaction: the noisy answer on the query row and the `privacy.query` audit event.

Once spent, budget stays spent, also when the source fails (a timeout can depend on the data, and
a crash between 1 and 3 must not hand the budget back).
"""

from __future__ import annotations

from dataclasses import asdict
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg2
from django.db import transaction
from django.utils import timezone

from audit import services as audit
from audit.models import Outcome
from governance.errors import ConflictError, InvalidInput, NotFound, Unavailable
from governance.models import AccessLevel, Grant
from governance.services.common import refusal_recorded

from .. import mechanisms, sql
from ..models import PrivacyBudget, PrivacyPolicy, PrivacyQuery, QueryKind, QueryStatus
from ..numbers import plain


def _epsilon(value: Any) -> Decimal:
    try:
        epsilon = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise InvalidInput(f"{value!r} is not a number.", field="epsilon") from None
    if not epsilon.is_finite() or not Decimal("0.000001") <= epsilon <= Decimal(1_000_000):
        raise InvalidInput("epsilon must be a number from 0.000001 to 1000000.", field="epsilon")
    return epsilon.quantize(Decimal("0.000001"))


def _spec(grant: Grant, *, kind: str, column: str, filter_column: str, filter_value: str) -> sql.AggregateSpec:
    """The validated query: the column must be declared for its kind, the filter a present column."""
    dataset = grant.dataset
    if kind not in QueryKind.values:
        raise InvalidInput(f"Unknown query {kind!r}; use {', '.join(QueryKind.values)}.", field="kind")
    policy = PrivacyPolicy.objects.filter(dataset=dataset).prefetch_related("bounds", "categoricals").first()
    if policy is None:
        raise ConflictError(f"The owner of {dataset.qualified_name} has not declared its privacy policy yet.")
    fields: dict[str, Any] = {}
    if kind in (QueryKind.SUM, QueryKind.MEAN):
        bound = next((b for b in policy.bounds.all() if b.column == column), None)
        if bound is None:
            declared = ", ".join(b.column for b in policy.bounds.all()) or "none"
            raise InvalidInput(f"{column!r} has no declared bounds (declared: {declared}).", field="column")
        fields = {"column": column, "lower": bound.lower, "upper": bound.upper}
    elif kind == QueryKind.HISTOGRAM:
        declared_cats = next((c for c in policy.categoricals.all() if c.column == column), None)
        if declared_cats is None:
            declared = ", ".join(c.column for c in policy.categoricals.all()) or "none"
            raise InvalidInput(f"{column!r} has no declared categories (declared: {declared}).", field="column")
        fields = {"column": column, "categories": list(declared_cats.categories)}
    elif column:
        raise InvalidInput("A count takes no column.", field="column")
    if filter_column:
        if not dataset.columns.filter(is_present=True, name=filter_column).exists():
            raise InvalidInput(f"{filter_column!r} is not a column of {dataset.qualified_name}.", field="filter_column")
        if len(filter_value) > 255:
            raise InvalidInput("The filter value is longer than 255 characters.", field="filter_value")
    return sql.AggregateSpec(
        schema=dataset.schema,
        table=dataset.name,
        kind=kind,
        k=policy.contribution_limit,
        unit_column=policy.unit_column,
        filter_column=filter_column,
        filter_value=filter_value if filter_column else "",
        **fields,
    )


def _release(spec: sql.AggregateSpec, exact: sql.Exact, epsilon: float) -> mechanisms.Release:
    if spec.kind == QueryKind.COUNT:
        return mechanisms.noisy_count(exact.count, k=spec.k, epsilon=epsilon)
    if spec.kind == QueryKind.HISTOGRAM:
        return mechanisms.noisy_histogram(exact.bins, categories=spec.categories, k=spec.k, epsilon=epsilon)
    assert spec.lower is not None and spec.upper is not None  # _spec set them for sums and means
    if spec.kind == QueryKind.SUM:
        return mechanisms.noisy_sum(float(exact.total), lower=spec.lower, upper=spec.upper, k=spec.k, epsilon=epsilon)
    return mechanisms.noisy_mean(
        exact_sum=float(exact.total),
        exact_count=exact.count,
        lower=spec.lower,
        upper=spec.upper,
        k=spec.k,
        epsilon=epsilon,
    )


def _spend(
    *, grant_id: int, actor: Any, kind: str, column: str, filter_column: str, filter_value: str, epsilon: Any
) -> tuple[PrivacyQuery, sql.AggregateSpec, Decimal]:
    with transaction.atomic():
        grant = Grant.objects.select_related("dataset__source").filter(pk=grant_id).first()
        # Someone else's grant answers as if it did not exist (no probing of grant ids).
        if grant is None or grant.grantee_user_id != getattr(actor, "pk", None) or grant.level != AccessLevel.AGGREGATE:
            raise NotFound(f"No aggregate grant #{grant_id} of yours.")
        if not grant.is_in_force():
            raise ConflictError(f"Grant #{grant.pk} has ended; request aggregate access again.")
        amount = _epsilon(epsilon)
        spec = _spec(grant, kind=kind, column=column, filter_column=filter_column, filter_value=filter_value)
        PrivacyBudget.objects.get_or_create(grant=grant)
        # The lock every query of this grant takes: check and spend are one step for all of them.
        budget = PrivacyBudget.objects.select_for_update().get(grant=grant)
        remaining = (grant.epsilon or Decimal(0)) - budget.spent
        if remaining <= 0:
            raise ConflictError(f"The privacy budget of grant #{grant.pk} is spent; no query can run.", field="epsilon")
        if amount > remaining:
            raise ConflictError(
                f"epsilon {plain(amount)} exceeds the remaining budget {plain(remaining)}; nothing was spent.",
                field="epsilon",
                remaining=str(remaining),
            )
        budget.spent += amount
        budget.save(update_fields=["spent", "updated_at"])
        query = PrivacyQuery.objects.create(
            grant=grant,
            actor=actor,
            kind=kind,
            column=spec.column,
            filter_column=spec.filter_column,
            filter_value=spec.filter_value,
            epsilon=amount,
        )
        audit.record(
            action="privacy.budget_spent",
            actor=actor,
            target=grant,
            changes={"spent": [str(budget.spent - amount), str(budget.spent)]},
            metadata=_describe(query) | {"remaining": str(remaining - amount)},
        )
    return query, spec, remaining - amount


def _describe(query: PrivacyQuery) -> dict[str, Any]:
    return {
        "query": query.pk,
        "kind": query.kind,
        "column": query.column,
        "filter": {query.filter_column: query.filter_value} if query.filter_column else {},
        "epsilon": str(query.epsilon),
    }


def privacy_query_run(
    *,
    grant_id: int,
    actor: Any,
    kind: str,
    epsilon: Any,
    column: str = "",
    filter_column: str = "",
    filter_value: str = "",
) -> PrivacyQuery:
    """Run one differentially private aggregate for the grantee of an aggregate grant; the returned
    row holds the noisy answer and its 95% error bound."""
    column, filter_column = (column or "").strip(), (filter_column or "").strip()
    asked = {"kind": kind, "column": column, "epsilon": str(epsilon)}
    with refusal_recorded(action="privacy.query", actor=actor, target=(Grant, grant_id), metadata=asked):
        query, spec, remaining = _spend(
            grant_id=grant_id,
            actor=actor,
            kind=kind,
            column=column,
            filter_column=filter_column,
            filter_value=str(filter_value or ""),
            epsilon=epsilon,
        )
    try:
        exact = sql.run(query.grant.dataset.source, spec)
    except psycopg2.Error as exc:
        reason = ((exc.pgerror or str(exc)).strip().splitlines() or ["error"])[0]
        with transaction.atomic():
            PrivacyQuery.objects.filter(pk=query.pk).update(status=QueryStatus.FAILED, error=reason)
            audit.record(
                action="privacy.query",
                actor=actor,
                target=query.grant,
                outcome=Outcome.FAILED,
                reason=reason,
                metadata=_describe(query) | {"remaining": str(remaining)},
            )
        raise Unavailable(f"The source could not answer ({reason}); the epsilon stays spent.") from None
    release = _release(spec, exact, float(query.epsilon))
    with transaction.atomic():
        query.answer = release.value
        query.error_bound = release.error_bound
        query.status = QueryStatus.ANSWERED
        query.answered_at = timezone.now()
        query.save(update_fields=["answer", "error_bound", "status", "answered_at"])
        audit.record(
            action="privacy.query",
            actor=actor,
            target=query.grant,
            metadata=_describe(query) | {"remaining": str(remaining)} | {"answer": asdict(release)},
        )
    return query

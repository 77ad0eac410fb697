"""Reads of row filters (docs/privacy.md "Row filters"): the snapshot a request for a filtered grant
carries, computed alike by the submit service and the request form's preview."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidInput
from ..models import Dataset, GranteeAttributes, RowFilter
from ..provisioners import pg_row_filters as pgr


def row_filter_snapshot(
    *, row_filter: RowFilter, dataset: Dataset, grantee_user: Any, grantee_role: Any
) -> dict[str, Any]:
    """What a request for a filtered grant carries: the filter's name and text, and its tree and
    compiled predicate with the grantee's values bound. A missing attribute refuses the request."""
    if row_filter.dataset_id != dataset.pk:
        raise InvalidInput(f"The row filter {row_filter.name!r} is not a filter of this dataset.", field="row_filter")
    tree = pgr.from_json(row_filter.tree)
    needed = pgr.attributes(tree)
    values: dict[str, str] = {}
    if needed:
        if grantee_user is None:
            raise InvalidInput(
                f"The row filter {row_filter.name!r} reads grantee attributes; request it for a person, not a role.",
                field="row_filter",
            )
        row = GranteeAttributes.objects.filter(user=grantee_user).first()
        values = {k: str(v) for k, v in (row.values if row else {}).items() if k in needed}
    try:
        bound = pgr.bind(tree, values)
    except pgr.FilterError as exc:
        raise InvalidInput(
            f"Row filter {row_filter.name!r}: {exc} Ask a governance admin to set it.", field="row_filter"
        ) from None
    return {
        "id": row_filter.pk,
        "name": row_filter.name,
        "expression": row_filter.expression,
        "values": values,
        "tree": bound,
        "compiled": pgr.text_of(bound),
    }

"""The portal's form for a quality check: what owners and stewards fill in on the dataset page.
Parameters are typed per kind here (a list of values, two bounds, a pattern...) and handed to the
same service as the admin and the API, whose refusals come back on the field they name."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from governance.models import Dataset

from .models import Kind, QualityCheck


class CheckForm(forms.Form):
    name = forms.CharField(max_length=100)
    kind = forms.ChoiceField(choices=Kind.choices)
    column = forms.ChoiceField(required=False, help_text="Empty for a row count or owner-written SQL.")
    threshold = forms.FloatField(
        initial=0.0,
        help_text="At most this share of failing rows (0 to 1); freshness: seconds; row count: at least these rows;"
        " owner-written SQL: at most these rows.",
    )
    values = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Allowed values: one per line."
    )
    minimum = forms.CharField(required=False, label="Min", help_text="Range: the lowest allowed value.")
    maximum = forms.CharField(required=False, label="Max", help_text="Range: the highest allowed value.")
    pattern = forms.CharField(required=False, max_length=500, help_text="Regular expression values must match.")
    reference = forms.CharField(
        required=False, help_text="Referential: schema.table.column of the same source the values must be in."
    )
    max_change = forms.FloatField(
        required=False,
        min_value=0,
        label="Max change",
        help_text="Row count: largest change since the last run (0.5 = 50%).",
    )
    sql = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        label="SQL",
        help_text="Owner-written: one SELECT of the failing rows; runs once someone else reviewed it.",
    )
    enabled = forms.BooleanField(required=False, initial=True)
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))

    def __init__(self, *args: Any, dataset: Dataset, check: QualityCheck | None = None, **kwargs: Any) -> None:
        if check is not None and "initial" not in kwargs:
            kwargs["initial"] = initial_of(check)
        super().__init__(*args, **kwargs)
        names = list(dataset.columns.filter(is_present=True).order_by("ordinal").values_list("name", flat=True))
        column = self.fields["column"]
        assert isinstance(column, forms.ChoiceField)
        column.choices = [("", "—"), *((n, n) for n in names)]

    def fields_for_service(self) -> dict[str, Any]:
        """What the service takes (`name`, `kind`, `column`, `params`, `threshold`, `enabled`,
        `description`), the parameters built for the chosen kind only."""
        data = self.cleaned_data
        kind = data["kind"]
        params: dict[str, Any] = {}
        if kind == Kind.ALLOWED_VALUES:
            params["values"] = [line.strip() for line in data["values"].splitlines() if line.strip()]
        elif kind == Kind.RANGE:
            params["min"] = _number(data["minimum"])
            params["max"] = _number(data["maximum"])
        elif kind == Kind.PATTERN:
            params["pattern"] = data["pattern"]
        elif kind == Kind.REFERENTIAL:
            parts = data["reference"].split(".")
            params = dict(zip(("schema", "table", "column"), parts, strict=False)) if len(parts) == 3 else {}
        elif kind == Kind.ROW_COUNT and data.get("max_change") is not None:
            params["max_change_fraction"] = data["max_change"]
        elif kind == Kind.CUSTOM_SQL:
            params["sql"] = data["sql"]
        return {
            "name": data["name"],
            "kind": kind,
            "column": data["column"],
            "params": params,
            "threshold": data["threshold"],
            "enabled": data["enabled"],
            "description": data["description"],
        }


FIELD_OF_PARAM = {
    "params.values": "values",
    "params.min": "minimum",
    "params.max": "maximum",
    "params.pattern": "pattern",
    "params.schema": "reference",
    "params.table": "reference",
    "params.column": "reference",
    "params.max_change_fraction": "max_change",
    "params.sql": "sql",
    "params": None,
}


def form_field(service_field: str | None) -> str | None:
    """The form's field for a field the service named in a refusal (None: the whole form)."""
    if service_field is None:
        return None
    return FIELD_OF_PARAM.get(service_field, service_field)


def _number(text: str) -> Any:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return text  # a date, say: PostgreSQL reads it as the column's type
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else text


def initial_of(check: QualityCheck) -> dict[str, Any]:
    p = check.params or {}
    reference = ".".join(str(p[k]) for k in ("schema", "table", "column")) if "schema" in p else ""
    return {
        "name": check.name,
        "kind": check.kind,
        "column": check.column,
        "threshold": check.threshold,
        "values": "\n".join(p.get("values", [])),
        "minimum": "" if p.get("min") is None else p["min"],
        "maximum": "" if p.get("max") is None else p["max"],
        "pattern": p.get("pattern", ""),
        "reference": reference,
        "max_change": p.get("max_change_fraction"),
        "sql": p.get("sql", ""),
        "enabled": check.enabled,
        "description": check.description,
    }

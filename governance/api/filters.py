"""Query filters of the list endpoints (django-filter), read as strictly as the schema states them.

django-filter was built for HTML forms: an empty value means "no filter", `?is_present=abc` means
"either", `?dataset=1.5` is a number. The schema (/api/schema/) promises types instead, so every
filter set here is a `StrictFilterSet`: a parameter that is given must hold a value of its type
(an empty string is only a value for a text filter), booleans are `true` or `false`, numbers are
whole, and anything else is a 400 naming the parameter. Unknown values of a choice are a 400 too.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import django_filters
from django import forms
from django.db.models import Q, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework.filters import OrderingFilter

from audit.models import AuditEvent, Outcome

from ..models import (
    AccessLevel,
    AccessRequest,
    ColumnTag,
    Dataset,
    DriftFinding,
    DriftKind,
    Grant,
    GrantStatus,
    JobAction,
    JobStatus,
    ProvisioningJob,
    RequestState,
    SensitiveTag,
    TagStatus,
)
from ..models.grants import in_force_q
from ..policy import pii_tag_q


class StrictOrderingFilter(OrderingFilter):
    """`?ordering=` only on the fields a view names in `ordering_fields` (DRF would otherwise allow
    any serializer field, including ones that are not columns)."""

    def get_valid_fields(self, queryset: Any, view: Any, context: Any = None) -> list[tuple[str, str]]:
        if getattr(view, "ordering_fields", None) is None:
            return []
        return list(super().get_valid_fields(queryset, view, context or {}))


_INTEGER = re.compile(r"-?[0-9]+")


class StrictFilterSet(django_filters.FilterSet):
    """A filter set that refuses, with a 400 per parameter, what the schema says is not a value of
    the parameter's type, instead of ignoring it. Text filters keep their meaning (an empty text is
    "no filter"; the schema's `string` allows it)."""

    strict = True

    def is_valid(self) -> bool:
        valid = super().is_valid()
        if not self.strict:
            return valid
        for name, filter_ in self.filters.items():
            if isinstance(filter_, django_filters.CharFilter) or name not in self.data:
                continue
            for raw in self.data.getlist(name):  # a QueryDict: every value of a repeated parameter
                problem = self._problem(filter_, raw)
                if problem and name not in self.form.errors:
                    self.form.add_error(name, forms.ValidationError(problem, code="invalid"))
                    valid = False
        return valid and not self.form.errors

    @staticmethod
    def _problem(filter_: django_filters.Filter, raw: str) -> str | None:
        if raw == "":
            return "Give a value, or leave the parameter out."
        if isinstance(filter_, django_filters.BooleanFilter) and raw not in ("true", "false"):
            return "Must be true or false."
        if isinstance(filter_, django_filters.NumberFilter) and not _INTEGER.fullmatch(raw):
            return "Must be a whole number."
        return None


@extend_schema_field(OpenApiTypes.INT)
class IdFilter(django_filters.NumberFilter):
    """An object's id: a whole number (django-filter's NumberFilter takes decimals)."""

    field_class = forms.IntegerField


@extend_schema_field({"type": "integer", "minimum": 0, "maximum": 100})
class PercentFilter(django_filters.NumberFilter):
    """A whole percentage, 0 to 100 (anything else is a 400 naming the parameter)."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 0)
        kwargs.setdefault("max_value", 100)
        super().__init__(*args, **kwargs)


class UtcDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 date-time, compared in UTC: any valid offset works (PostgreSQL itself accepts only
    ±15:59), and one that cannot be represented is a 400, not a database error."""

    def clean(self, value: Any) -> Any:
        parsed = super().clean(value)
        if parsed is None:
            return None
        try:
            return parsed.astimezone(dt.UTC)
        except (OverflowError, ValueError):
            raise forms.ValidationError("Date-time out of range.", code="invalid") from None


class UtcDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcDateTimeField


class DatasetFilter(StrictFilterSet):
    q = django_filters.CharFilter(method="search", help_text="Search in schema, name and description.")
    source = django_filters.CharFilter(field_name="source__name")
    schema = django_filters.CharFilter()
    classification = django_filters.CharFilter(field_name="classification__slug")
    owner = django_filters.CharFilter(field_name="owner__username")
    tag = django_filters.ChoiceFilter(
        choices=SensitiveTag.choices,
        method="with_tag",
        help_text="Has a column with this tag (confirmed, or inherited through lineage).",
    )
    is_present = django_filters.BooleanFilter()
    quality = django_filters.ChoiceFilter(
        choices=[("passing", "Passing"), ("failing", "Failing"), ("error", "Error"), ("unknown", "Not run yet")],
        method="with_quality",
        help_text="Its data quality checks' state (docs/quality.md).",
    )

    class Meta:
        model = Dataset
        fields = ["q", "source", "schema", "classification", "owner", "tag", "is_present", "quality"]

    def search(self, qs: QuerySet[Dataset], name: str, value: str) -> QuerySet[Dataset]:
        return qs.filter(Q(name__icontains=value) | Q(schema__icontains=value) | Q(description__icontains=value))

    def with_tag(self, qs: QuerySet[Dataset], name: str, value: str) -> QuerySet[Dataset]:
        return qs.filter(
            pk__in=Dataset.objects.filter(Q(columns__is_present=True) & pii_tag_q(value, "columns__")).values("pk")
        )

    def with_quality(self, qs: QuerySet[Dataset], name: str, value: str) -> QuerySet[Dataset]:
        # `quality` is the reverse of quality.DatasetQuality's one-to-one (the quality app builds on
        # governance: governance names the relation, never imports the app).
        # An open integrity finding (quality.IntegrityFinding, reverse `integrity_findings`) counts as
        # failing until someone accepts the change, as the badges show it.
        open_findings = Dataset.objects.filter(
            integrity_findings__isnull=False, integrity_findings__resolved_at__isnull=True
        )
        changed = Q(pk__in=open_findings.values("pk"))
        if value == "unknown":
            return qs.filter(Q(quality__isnull=True) | Q(quality__status="unknown"))
        if value == "failing":
            return qs.filter(Q(quality__status="failing") | changed)
        return qs.filter(quality__status=value).exclude(changed)


class PortalDatasetFilter(DatasetFilter):
    """The portal's catalog search (an HTML form): the browser sends every field, the empty ones
    included, and an empty field means "any". The API's strictness is for API clients only."""

    strict = False


class ColumnTagFilter(StrictFilterSet):
    """The stewardship queue's filters (the API's /column-tags/ and the portal's Suggestions page)."""

    status = django_filters.ChoiceFilter(choices=TagStatus.choices)
    source = django_filters.CharFilter(field_name="column__dataset__source__name")
    dataset = IdFilter(field_name="column__dataset_id")
    tag = django_filters.ChoiceFilter(choices=SensitiveTag.choices)
    min_confidence = PercentFilter(
        method="filter_min_confidence",
        help_text="Only suggestions at least this confident, in percent (0 to 100).",
    )

    class Meta:
        model = ColumnTag
        fields = ["status", "source", "dataset", "tag", "min_confidence"]

    def filter_min_confidence(self, qs: QuerySet[ColumnTag], name: str, value: Any) -> QuerySet[ColumnTag]:
        return qs.filter(confidence__gte=float(value) / 100)


class PortalColumnTagFilter(ColumnTagFilter):
    """The portal's form sends its empty fields too: empty means any (see PortalDatasetFilter)."""

    strict = False


class AccessRequestFilter(StrictFilterSet):
    state = django_filters.ChoiceFilter(choices=RequestState.choices)
    level = django_filters.ChoiceFilter(choices=AccessLevel.choices)
    dataset = IdFilter(field_name="dataset_id")
    requester = django_filters.CharFilter(field_name="requester__username")
    submitted_after = UtcDateTimeFilter(field_name="submitted_at", lookup_expr="gte")
    submitted_before = UtcDateTimeFilter(field_name="submitted_at", lookup_expr="lt")

    class Meta:
        model = AccessRequest
        fields = ["state", "level", "dataset", "requester", "submitted_after", "submitted_before"]


class GrantFilter(StrictFilterSet):
    user = django_filters.CharFilter(field_name="grantee_user__username", help_text="What this user can access.")
    role = django_filters.CharFilter(field_name="grantee_role__slug")
    dataset = IdFilter(field_name="dataset_id", help_text="Who can access this dataset.")
    source = django_filters.CharFilter(field_name="dataset__source__name")
    classification = django_filters.CharFilter(field_name="dataset__classification__slug")
    status = django_filters.ChoiceFilter(choices=GrantStatus.choices)
    level = django_filters.ChoiceFilter(choices=AccessLevel.choices)
    in_force = django_filters.BooleanFilter(method="filter_in_force", help_text="Started, not ended, not revoked.")
    ends_before = UtcDateTimeFilter(field_name="ends_at", lookup_expr="lt")

    class Meta:
        model = Grant
        fields = ["user", "role", "dataset", "source", "classification", "status", "level", "in_force", "ends_before"]

    def filter_in_force(self, qs: QuerySet[Grant], name: str, value: bool) -> QuerySet[Grant]:
        return qs.filter(in_force_q()) if value else qs.exclude(in_force_q())


class ProvisioningJobFilter(StrictFilterSet):
    status = django_filters.ChoiceFilter(choices=JobStatus.choices)
    action = django_filters.ChoiceFilter(choices=JobAction.choices)
    grant = IdFilter(field_name="grant_id")

    class Meta:
        model = ProvisioningJob
        fields = ["status", "action", "grant"]


class DriftFindingFilter(StrictFilterSet):
    source = django_filters.CharFilter(field_name="source__name")
    kind = django_filters.ChoiceFilter(choices=DriftKind.choices)
    open = django_filters.BooleanFilter(field_name="resolved_at", lookup_expr="isnull", help_text="Not resolved yet.")

    class Meta:
        model = DriftFinding
        fields = ["source", "kind", "open"]


class AuditEventFilter(StrictFilterSet):
    actor = django_filters.CharFilter(method="filter_actor", help_text="The actor's username as shown.")
    action = django_filters.CharFilter(help_text="Exact action, e.g. access_request.approved.")
    action_prefix = django_filters.CharFilter(field_name="action", lookup_expr="startswith")
    target_type = django_filters.CharFilter()
    target_id = django_filters.CharFilter()
    outcome = django_filters.ChoiceFilter(choices=Outcome.choices)
    request_id = django_filters.CharFilter()
    since = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = UtcDateTimeFilter(field_name="occurred_at", lookup_expr="lt")

    class Meta:
        model = AuditEvent
        fields = [
            "actor",
            "action",
            "action_prefix",
            "target_type",
            "target_id",
            "outcome",
            "request_id",
            "since",
            "until",
        ]

    def filter_actor(self, queryset: Any, name: str, value: str) -> Any:
        """By the username as displayed: a redacted person (audit.redaction) is found by their
        pseudonym, and their former username finds nothing (it would link the two)."""
        from audit import redaction

        return redaction.filter_actor(queryset, value)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)

"""Shapes of the privacy API: aggregate grants with their budget, queries with their noisy answer,
and the inputs (strictly typed: a value of the wrong JSON type is a 400 naming the field)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from governance.api.validation import StrictTypesMixin

from ..models import PrivacyPolicy, PrivacyQuery, QueryKind
from ..numbers import plain
from ..selectors import budget_of


class PrivacyQuerySerializer(serializers.ModelSerializer[PrivacyQuery]):
    actor = serializers.CharField(source="actor.username", read_only=True)
    answer = serializers.JSONField(read_only=True, help_text="The noisy answer (never the exact value).")
    error_bound = serializers.JSONField(read_only=True, help_text="|noise| is below this with 95% probability.")

    class Meta:
        model = PrivacyQuery
        fields = [
            "id", "kind", "column", "filter_column", "filter_value", "epsilon", "status", "answer", "error_bound",
            "error", "actor", "created_at", "answered_at",
        ]  # fmt: skip
        read_only_fields = fields


class AggregateGrantSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(read_only=True)
    dataset = serializers.CharField(source="dataset.qualified_name", read_only=True)
    dataset_id = serializers.IntegerField(read_only=True)
    starts_at = serializers.DateTimeField(read_only=True)
    ends_at = serializers.DateTimeField(read_only=True)
    in_force = serializers.SerializerMethodField()
    epsilon_total = serializers.SerializerMethodField()
    epsilon_spent = serializers.SerializerMethodField()
    epsilon_remaining = serializers.SerializerMethodField()

    def get_in_force(self, obj: Any) -> bool:
        return bool(obj.is_in_force())

    def get_epsilon_total(self, obj: Any) -> str:
        return plain(budget_of(obj).total)

    def get_epsilon_spent(self, obj: Any) -> str:
        return plain(budget_of(obj).spent)

    def get_epsilon_remaining(self, obj: Any) -> str:
        return plain(budget_of(obj).remaining)


class AggregateQueryInputSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    kind = serializers.ChoiceField(choices=QueryKind.choices)
    column = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)
    epsilon = serializers.DecimalField(max_digits=12, decimal_places=6, help_text="At most what remains.")
    filter_column = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)
    filter_value = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)


class BoundSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    column = serializers.CharField(max_length=255)
    lower = serializers.DecimalField(max_digits=20, decimal_places=6)
    upper = serializers.DecimalField(max_digits=20, decimal_places=6)


class CategoriesSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    column = serializers.CharField(max_length=255)
    categories = serializers.ListField(child=serializers.CharField(max_length=255), max_length=200)


class PrivacyPolicySerializer(StrictTypesMixin, serializers.Serializer[Any]):
    aggregates_only = serializers.BooleanField()
    unit_column = serializers.CharField(max_length=255, required=False, default="", allow_blank=True)
    contribution_limit = serializers.IntegerField(min_value=1, max_value=1000, required=False, default=1)
    bounds = BoundSerializer(many=True, required=False, default=list)
    categoricals = CategoriesSerializer(many=True, required=False, default=list)

    @staticmethod
    def of(policy: PrivacyPolicy | None, aggregates_only: bool) -> dict[str, Any]:
        if policy is None:
            return {
                "aggregates_only": aggregates_only,
                "unit_column": "",
                "contribution_limit": 1,
                "bounds": [],
                "categoricals": [],
            }
        return {
            "aggregates_only": aggregates_only,
            "unit_column": policy.unit_column,
            "contribution_limit": policy.contribution_limit,
            "bounds": [
                {"column": b.column, "lower": plain(b.lower), "upper": plain(b.upper)} for b in policy.bounds.all()
            ],
            "categoricals": [{"column": c.column, "categories": c.categories} for c in policy.categoricals.all()],
        }

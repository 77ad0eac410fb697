"""Shapes of the stewardship endpoints (/api/v1/column-tags/): PII suggestions with why each was
made, decisions on one or many, and the preview of the classification changes a confirmation
would bring."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..models import ColumnTag
from ..selectors.stewardship import reasons
from ..services.stewardship import MAX_BULK
from .pagination import MAX_INTEGER
from .serializers import DatasetRefSerializer
from .validation import StrictTypesMixin


class FindingSerializer(serializers.Serializer[Any]):
    detector = serializers.CharField(help_text="What found it, e.g. email_pattern, name_hint.")
    basis = serializers.ChoiceField(choices=["name", "values"], help_text="The column's name, or sampled values.")
    shape = serializers.CharField(required=False, help_text="The shape that matched (never a value).")
    matched = serializers.IntegerField(required=False, help_text="Sampled values that matched.")
    sampled = serializers.IntegerField(required=False, help_text="Values sampled.")
    share = serializers.FloatField(required=False, help_text="matched / sampled.")


class ColumnTagSerializer(serializers.ModelSerializer[ColumnTag]):
    dataset = DatasetRefSerializer(source="column.dataset", read_only=True)
    column = serializers.CharField(source="column.name", read_only=True)
    classification = serializers.CharField(
        source="column.dataset.classification.slug", read_only=True, help_text="The dataset's effective classification."
    )
    findings = FindingSerializer(many=True, read_only=True, help_text="Why discovery suggested it; never a value.")
    reasons = serializers.SerializerMethodField(help_text="The findings in words (or the evidence of older tags).")
    decided_by = serializers.CharField(source="decided_by.username", read_only=True, allow_null=True, default=None)

    class Meta:
        model = ColumnTag
        fields = [
            "id",
            "dataset",
            "column",
            "classification",
            "tag",
            "status",
            "confidence",
            "findings",
            "reasons",
            "evidence",
            "evaluated_at",
            "decided_by",
            "decided_at",
            "created_at",
        ]

    @extend_schema_field(serializers.ListField(child=serializers.CharField()))
    def get_reasons(self, tag: ColumnTag) -> list[str]:
        return reasons(tag)


def _ids_field() -> serializers.ListField:
    return serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=MAX_INTEGER),
        min_length=1,
        max_length=MAX_BULK,
        help_text=f"Ids of column tags, at most {MAX_BULK}.",
    )


class TagIdsSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    ids = _ids_field()


class BulkDecisionSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    decision = serializers.ChoiceField(choices=["confirm", "reject"])
    ids = _ids_field()


class ChangeSerializer(serializers.Serializer[Any]):
    dataset = serializers.IntegerField(source="dataset_id")
    qualified_name = serializers.CharField(source="label", help_text="schema.name")
    before = serializers.CharField(help_text="Classification now.")
    after = serializers.CharField(help_text="Classification once confirmed.")


class PreviewSerializer(serializers.Serializer[Any]):
    summary = serializers.CharField(help_text="The changes in one sentence.")
    confirming = serializers.ListField(child=serializers.CharField(), help_text="The suggestions still to confirm.")
    raised = ChangeSerializer(many=True, help_text="Datasets whose own classification rises.")
    views = ChangeSerializer(many=True, help_text="Views (and views of views) that rise with them.")
    unchanged = serializers.ListField(child=serializers.CharField(), help_text="Datasets already strict enough.")


class BulkResultSerializer(serializers.Serializer[Any]):
    decided = ColumnTagSerializer(many=True)
    preview = PreviewSerializer(help_text="What the confirmations changed (computed before they were made).")

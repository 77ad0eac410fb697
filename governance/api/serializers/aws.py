"""AWS: S3 datasets and IAM identities."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from accounts.models import User

from ...models import (
    Classification,
    Role,
)
from ..validation import StrictTypesMixin


class S3DatasetRegisterSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    """An S3 prefix of an AWS source to govern as a dataset (docs/aws.md)."""

    bucket = serializers.CharField(max_length=63)
    prefix = serializers.CharField(max_length=255, allow_blank=True, default="")
    description = serializers.CharField(allow_blank=True, default="")
    classification = serializers.SlugRelatedField(
        slug_field="slug", queryset=Classification.objects.all(), required=False, allow_null=True, default=None
    )
    owner = serializers.SlugRelatedField(
        slug_field="username",
        queryset=User.objects.filter(is_active=True),
        required=False,
        allow_null=True,
        default=None,
    )


class S3DatasetSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    source = serializers.CharField()  # type: ignore[assignment]  # a field named like a DRF attribute
    location = serializers.CharField()
    classification = serializers.CharField()


class PrincipalMapSerializer(StrictTypesMixin, serializers.Serializer[Any]):
    """Map a person (`user`) or a portal role (`role`, its slug) to an identity that already exists on
    the source: a PostgreSQL login, or on AWS `user/NAME` / `role/NAME`."""

    name = serializers.CharField(max_length=200)
    user = serializers.SlugRelatedField(slug_field="username", queryset=User.objects.all(), required=False)
    role = serializers.SlugRelatedField(slug_field="slug", queryset=Role.objects.all(), required=False)


class PrincipalSerializer(serializers.Serializer[Any]):
    source = serializers.CharField()  # type: ignore[assignment]  # a field named like a DRF attribute
    name = serializers.CharField()
    user = serializers.CharField(allow_null=True)
    role = serializers.CharField(allow_null=True)

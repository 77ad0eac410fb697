"""Reads of the catalog, already shaped for the pages that show them."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from guardian.shortcuts import get_objects_for_user

from ..backends import KINDS
from ..models import Dataset, DatasetUserObjectPermission, DataSource


def datasets_visible_to(user: Any) -> QuerySet[Dataset]:
    """Catalog metadata (names, classification, owners) is visible to every signed-in user: people
    must find data before they can ask for it. Data access itself is what grants decide."""
    return Dataset.objects.select_related("source", "classification", "owner")


def datasets_approvable_by(user: Any) -> QuerySet[Dataset]:
    """Datasets whose owner stage `user` may decide (explicit object permission; no superuser bypass)."""
    return get_objects_for_user(
        user,
        "governance.approve_access",
        klass=Dataset.objects.all(),
        with_superuser=False,
        accept_global_perms=False,
    )


def datasets_stewarded_by(user: Any) -> QuerySet[Dataset]:
    return get_objects_for_user(
        user,
        "governance.steward_dataset",
        klass=Dataset.objects.all(),
        with_superuser=False,
        accept_global_perms=False,
    )


def dataset_stewards(dataset: Dataset) -> QuerySet[Any]:
    """Users holding the steward permission on the dataset, the owner excluded."""
    user_ids = DatasetUserObjectPermission.objects.filter(
        content_object=dataset, permission__codename="steward_dataset"
    ).values("user_id")
    qs = get_user_model().objects.filter(pk__in=user_ids)
    if dataset.owner_id:
        qs = qs.exclude(pk=dataset.owner_id)
    return qs


def provisioned_sources() -> QuerySet[DataSource]:
    """The sources the portal provisions and reconciles (a kind it has a backend for, provisioning
    on), by name."""
    return DataSource.objects.filter(kind__in=KINDS, provisioning_enabled=True).order_by("name")

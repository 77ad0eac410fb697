"""The object permissions a dataset's owner holds on it (django-guardian), given by the catalog
sync to new datasets and moved by the catalog services when the owner changes. Here, below both,
so that the sync never imports the services that import it."""

from __future__ import annotations

from typing import Any

from guardian.shortcuts import assign_perm, remove_perm

from ..models import Dataset

OWNER_PERMS = ("approve_access", "steward_dataset")


def set_owner_perms(dataset: Dataset, old_owner: Any, new_owner: Any) -> None:
    if old_owner is not None and (new_owner is None or old_owner.pk != new_owner.pk):
        for perm in OWNER_PERMS:
            remove_perm(perm, old_owner, dataset)
    if new_owner is not None:
        for perm in OWNER_PERMS:
            assign_perm(perm, new_owner, dataset)

"""The `datasets` section (docs/policy-as-code.md#the-document): each dataset's owner, stewards and
(declared) classification, named as the catalog names it (`<source>:<schema>.<name>`).

Datasets come from catalog sync: a document never creates nor removes one (naming an unknown
dataset is a problem at its path), and a dataset the document does not name is left alone.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model

from governance.models import Classification, Dataset, DatasetUserObjectPermission
from governance.services.catalog import (
    dataset_steward_add,
    dataset_steward_remove,
    dataset_update,
    minimum_classification,
)
from quality.as_code import find_datasets, key_of

from .document import DocumentError
from .models import ManagedKind
from .selectors import markers

SECTION = "datasets"
Problems = list[tuple[str, str]]


def _stewards_of(datasets: list[Dataset]) -> dict[int, list[str]]:
    """{dataset id: sorted usernames holding the steward permission, the owner excluded} in one query."""
    owners = {d.pk: d.owner_id for d in datasets}
    out: dict[int, list[str]] = {d.pk: [] for d in datasets}
    rows = DatasetUserObjectPermission.objects.filter(
        content_object_id__in=list(owners), permission__codename="steward_dataset"
    ).values_list("content_object_id", "user_id", "user__username")
    for dataset_id, user_id, username in rows:
        if user_id != owners[dataset_id]:
            out[dataset_id].append(username)
    return {k: sorted(set(v)) for k, v in out.items()}


def dataset_entry(dataset: Dataset, stewards: list[str]) -> dict[str, Any]:
    return {
        "dataset": key_of(dataset),
        "owner": dataset.owner.username if dataset.owner else None,
        "stewards": stewards,
        "classification": dataset.declared_classification.slug,
    }


def export_datasets() -> list[dict[str, Any]]:
    """Every dataset present in the catalog, sorted by its key."""
    datasets = list(
        Dataset.objects.filter(is_present=True).select_related("source", "owner", "declared_classification")
    )
    stewards = _stewards_of(datasets)
    return sorted((dataset_entry(d, stewards[d.pk]) for d in datasets), key=lambda e: e["dataset"])


def plan_datasets(entries: list[dict[str, Any]], lock: bool, problems: Problems, unmanaged: list[str]) -> list[Any]:
    from .plans import Change  # plans imports this module

    try:
        found = dict(enumerate(find_datasets([e["dataset"] for e in entries], what="datasets")))
    except DocumentError as exc:  # a document names datasets the catalog has; none is created
        problems += [((path if path != "datasets" else "datasets[0]") + ".dataset", m) for path, m in exc.problems]
        return []
    if lock and found:
        rows = Dataset.objects.select_for_update(of=("self",)).filter(pk__in=[d.pk for d in found.values()])
        list(rows.values_list("pk", flat=True))
    datasets = {
        d.pk: d
        for d in Dataset.objects.filter(pk__in=[d.pk for d in found.values()]).select_related(
            "source", "owner", "declared_classification"
        )
    }
    current = _stewards_of(list(datasets.values()))
    names = {e["owner"] for e in entries if e.get("owner")} | {s for e in entries for s in e.get("stewards", [])}
    users = {u.username: u for u in get_user_model().objects.filter(username__in=names)} if names else {}
    levels = {c.slug: c for c in Classification.objects.all()}
    managed = markers(ManagedKind.DATASET)
    seen: dict[int, int] = {}
    changes = []
    for index, entry in enumerate(entries):
        path = f"datasets[{index}]"
        if index not in found:
            continue
        dataset = datasets[found[index].pk]
        if dataset.pk in seen:
            problems.append((f"{path}.dataset", f"names datasets[{seen[dataset.pk]}] again."))
            continue
        seen[dataset.pk] = index
        start = len(problems)
        owner_name = entry.get("owner", dataset.owner.username if dataset.owner else None)
        for at, name in [("owner", entry.get("owner"))] + [
            (f"stewards[{i}]", s) for i, s in enumerate(entry.get("stewards", []))
        ]:
            if name and (name not in users or not users[name].is_active):
                problems.append((f"{path}.{at}", f"there is no active user {name!r}."))
            elif name and at != "owner" and name == owner_name:
                problems.append((f"{path}.{at}", f"{name} is the owner (the owner is always a steward)."))
        level = None
        if "classification" in entry:
            level = levels.get(entry["classification"])
            if level is None:
                known = ", ".join(sorted(levels))
                wrong = f"there is no classification {entry['classification']!r} (known: {known})."
                problems.append((f"{path}.classification", wrong))
            elif level.pk != dataset.declared_classification_id:  # only a change asks for the floor
                floor = minimum_classification(dataset)
                if floor is not None and level.rank < floor.rank:
                    problems.append(
                        (f"{path}.classification", f"it has confirmed sensitive columns: at least {floor.slug}.")
                    )
        if len(problems) > start:
            continue
        key = key_of(dataset)
        if dataset.pk not in managed:
            unmanaged.append(f"dataset {key}")
        before = dataset_entry(dataset, current[dataset.pk])
        diff: dict[str, list[Any]] = {}
        values: dict[str, Any] = {}
        if "owner" in entry and before["owner"] != (entry["owner"] or None):
            diff["owner"] = [before["owner"], entry["owner"] or None]
            values["owner"] = users[entry["owner"]] if entry["owner"] else None
        if level is not None and before["classification"] != level.slug:
            diff["classification"] = [before["classification"], level.slug]
            values["classification"] = level
        if "stewards" in entry and before["stewards"] != sorted(entry["stewards"]):
            wanted = sorted(entry["stewards"])
            diff["stewards"] = [before["stewards"], wanted]
            values["stewards"] = [users[s] for s in wanted]
        if diff:
            changes.append(Change(SECTION, "changed", key, diff, obj=dataset, values=values))
    return changes


def apply_dataset(change: Any, actor: Any, reason: str) -> None:
    """Owner and classification through dataset_update, then stewards one by one (each audited)."""
    values = dict(change.values)
    stewards = values.pop("stewards", None)
    dataset = change.obj
    if values:
        dataset = dataset_update(dataset=dataset, actor=actor, reason=reason, **values)
    if stewards is not None:
        have = set(_stewards_of([dataset])[dataset.pk])
        wanted = {u.username: u for u in stewards}
        for user in get_user_model().objects.filter(username__in=sorted(have - set(wanted))).order_by("username"):
            dataset_steward_remove(dataset=dataset, user=user, actor=actor)
        for name in sorted(set(wanted) - have):
            dataset_steward_add(dataset=dataset, user=wanted[name], actor=actor)


def named_datasets(entries: list[dict[str, Any]]) -> list[tuple[Dataset, str]]:
    """The datasets a (planned, so valid) document names, with their keys."""
    return [(d, key_of(d)) for d in find_datasets([e["dataset"] for e in entries], what="datasets")]


__all__ = ["DocumentError", "apply_dataset", "export_datasets", "named_datasets", "plan_datasets"]

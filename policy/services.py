"""Writes of the policy app: apply a planned document, adopt an object into code, release one.

Apply makes every change through governance's and quality's services (their permission rules,
validation and audit events), in one transaction, inside `governance.managed.applying_code()` (the
one context in which managed objects may change) and with the audit context's source `gitops`:
every event it records says source "gitops", who applied it, through which door (cli or api) and
which document (`{"via": "gitops", "door": "cli", "document": "sha256:..."}`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.db.models import Model
from django.utils import timezone

from accounts.roles import is_governance_admin
from audit import services as audit
from audit.context import bind, current, marked
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.managed import applying_code
from governance.models import Classification, Dataset, Grant, Role
from governance.services.classifications import classification_update
from governance.services.common import refusal_recorded
from governance.services.roles import role_create, role_member_add, role_member_remove, role_update
from governance.services.standing_grants import standing_grant_create, standing_grant_revoke
from quality import as_code as quality_code
from quality.as_code import key_of
from quality.as_code.document import DocumentError, dataset_key, parse_key

from .datasets import apply_dataset, named_datasets
from .models import ManagedKind, ManagedObject
from .plans import Change, Plan, grant_key, grantee_of, plan, standing_grants_in_force

SOURCE = "gitops"


def _ensure_admin(actor: Any) -> None:
    if not (actor is not None and (is_governance_admin(actor) or getattr(actor, "is_superuser", False))):
        who = getattr(actor, "username", None) or "this caller"
        raise NotPermitted(f"{who} may not apply policy documents: governance admins do; nothing was changed.")


@contextlib.contextmanager
def gitops(digest: str) -> Iterator[None]:
    """The audit context of a document's changes: source `gitops`, the door and the document marked."""
    door = current().source
    with bind(replace(current(), source=SOURCE)), marked(via=SOURCE, door=door, document=digest):
        yield


def policy_apply(*, planned: Plan, actor: Any, origin: str = "") -> Plan:
    """Make the plan's changes as `actor` (a governance admin), all or nothing; refused
    (ConflictError) when the portal changed since the plan. Marks what the document names as managed
    in code. Returns what was applied (nothing, and no write at all, the second time)."""
    with gitops(planned.digest):
        with refusal_recorded(action="policy.apply", actor=actor, metadata={"document": planned.digest}):
            with applying_code(), transaction.atomic():
                _ensure_admin(actor)
                done = plan(planned.document, actor, lock=True)
                if done.as_dict() != planned.as_dict():
                    raise ConflictError("The portal changed since this plan was made: plan again; nothing was changed.")
                reason = f"policy document {done.digest}" + (f" ({origin})" if origin else "")
                for change in done.changes:
                    _apply(change, actor, reason)
                if done.quality is not None and done.quality.changes:
                    quality_code.apply(done.quality, actor)
                marked_now = _mark(done, actor, origin)
                if done.count or marked_now:
                    audit.record(
                        action="policy.applied",
                        actor=actor,
                        reason=reason,
                        changes={},
                        metadata={
                            "summary": done.summary(applied=True),
                            "changes": done.count,
                            "grants": {"provision": done.provisions, "revoke": done.revokes},
                            "marked": marked_now,
                        },
                    )
    return done


def _apply(change: Change, actor: Any, reason: str) -> None:
    values = dict(change.values)
    if change.section == "classifications":
        classification_update(classification=change.obj, actor=actor, reason=reason, **values)
    elif change.section == "roles":
        add, remove = values.pop("add", []), values.pop("remove", [])
        if change.action == "created":
            role = role_create(actor=actor, name=change.key, **values)
        else:
            role = role_update(role=change.obj, actor=actor, **values) if values else change.obj
        for membership in remove:
            role_member_remove(membership=membership, actor=actor, reason=reason)
        for user in add:
            role_member_add(role=role, user=user, actor=actor, reason=reason)
    elif change.section == "datasets":
        apply_dataset(change, actor, reason)
    elif change.section == "standing_grants":
        values.pop("spec", None)
        if change.obj is not None:
            standing_grant_revoke(grant=change.obj, actor=actor, reason=f"no longer in {reason}")
        if change.action != "removed":
            standing_grant_create(actor=actor, reason=f"standing grant of {reason}", **values)


def _mark(done: Plan, actor: Any, origin: str) -> int:
    """Mark what the document names as managed in code (by `done.digest`); unmark the standing
    grants it revoked. Returns how many markers were written (0 when the document applied already)."""
    doc = done.document
    wanted: list[tuple[str, Model, str, dict[str, Any]]] = []
    if "classifications" in doc:
        rows = {c.slug: c for c in Classification.objects.filter(slug__in=[e["slug"] for e in doc["classifications"]])}
        wanted += [(ManagedKind.CLASSIFICATION, rows[e["slug"]], e["slug"], {}) for e in doc["classifications"]]
    if "roles" in doc:
        rows_r = {r.name: r for r in Role.objects.filter(name__in=[e["name"] for e in doc["roles"]])}
        wanted += [(ManagedKind.ROLE, rows_r[e["name"]], e["name"], {}) for e in doc["roles"]]
    if "datasets" in doc:
        wanted += [(ManagedKind.DATASET, d, key, {}) for d, key in named_datasets(doc["datasets"])]
    if "standing_grants" in doc:
        specs = {}
        for change in done.changes:
            if change.section == "standing_grants" and change.action != "removed":
                specs[change.key] = change.values["spec"]
        named = _named_grants(doc)
        for grant in standing_grants_in_force():
            kind, name = grantee_of(grant)
            key = grant_key(kind, name, grant.level, key_of(grant.dataset))
            if key in named:
                spec = specs.get(key, {"until": named[key].get("until")})
                wanted.append((ManagedKind.STANDING_GRANT, grant, key, spec))
    written = 0
    stale = ManagedObject.objects.filter(kind=ManagedKind.STANDING_GRANT).exclude(
        object_id__in=standing_grants_in_force().values("pk")
    )
    written += stale.delete()[0]
    now = timezone.now()
    for kind, obj, key, spec in wanted:
        content_type = ContentType.objects.get_for_model(obj, for_concrete_model=True)
        marker = ManagedObject.objects.filter(content_type=content_type, object_id=obj.pk).first()
        if marker is not None and marker.document == done.digest and marker.key == key and marker.spec == spec:
            continue
        ManagedObject.objects.update_or_create(
            content_type=content_type,
            object_id=obj.pk,
            defaults={
                "kind": kind,
                "key": key,
                "document": done.digest,
                "origin": origin[:200],
                "spec": spec,
                "applied_at": now,
                "applied_by": actor,
            },
        )
        written += 1
    return written


def _named_grants(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{key: entry} of the document's standing grants (datasets as the catalog names them)."""
    out = {}
    for entry in doc["standing_grants"]:
        kind = "role" if "role" in entry else "user"
        key = dataset_key(*parse_key(entry["dataset"]))
        out[grant_key(kind, entry[kind], entry["level"], key)] = entry
    return out


# --- adopt and release ---------------------------------------------------------------------------------


KINDS = {
    ManagedKind.CLASSIFICATION: Classification,
    ManagedKind.ROLE: Role,
    ManagedKind.STANDING_GRANT: Grant,
    ManagedKind.DATASET: Dataset,
}


def find_object(kind: str, name: str) -> tuple[Model, str]:
    """The object an operator names: a classification by slug, a role by name, a standing grant by
    its id or its key (`role:<name> <level> <source>:<schema>.<table>`), a dataset by its key
    (`<source>:<schema>.<name>`), with the key it is marked by."""
    if kind not in KINDS:
        raise InvalidInput(f"{kind!r} is not a kind managed in code ({', '.join(KINDS)}).", field="kind")
    if kind == ManagedKind.CLASSIFICATION:
        obj = Classification.objects.filter(slug=name).first()
        if obj is not None:
            return obj, obj.slug
    elif kind == ManagedKind.ROLE:
        role = Role.objects.filter(name=name).first()
        if role is not None:
            return role, role.name
    elif kind == ManagedKind.DATASET:
        try:
            return named_datasets([{"dataset": name}])[0]
        except DocumentError:
            pass
    else:
        for grant in standing_grants_in_force():
            who, grantee = grantee_of(grant)
            key = grant_key(who, grantee, grant.level, key_of(grant.dataset))
            if name in (key, str(grant.pk)):
                return grant, key
    raise InvalidInput(f"There is no {kind.replace('_', ' ')} {name!r}.", field="name")


def policy_adopt(*, kind: str, name: str, actor: Any, reason: str = "") -> ManagedObject:
    """Mark an object made in the portal as managed in code (from now on the portal refuses to change
    it; the next document that names it owns it)."""
    with refusal_recorded(action="policy.adopt", actor=actor, metadata={"kind": kind, "name": name}):
        with transaction.atomic():
            _ensure_admin(actor)
            obj, key = find_object(kind, name)
            content_type = ContentType.objects.get_for_model(obj, for_concrete_model=True)
            if ManagedObject.objects.filter(content_type=content_type, object_id=obj.pk).exists():
                raise ConflictError(f"{kind.replace('_', ' ').capitalize()} {key} is already managed in code.")
            marker = ManagedObject.objects.create(
                content_type=content_type,
                object_id=obj.pk,
                kind=kind,
                key=key,
                document="adopted",
                origin="adopted",
                spec={},
                applied_at=timezone.now(),
                applied_by=actor,
            )
            audit.record(
                action="policy.adopted", actor=actor, target=obj, reason=reason, metadata={"kind": kind, "key": key}
            )
    return marker


def policy_release(*, kind: str, name: str, actor: Any, reason: str = "") -> None:
    """Unmark an object: the portal may change it again, and documents leave it alone until one
    names it again."""
    with refusal_recorded(action="policy.release", actor=actor, metadata={"kind": kind, "name": name}):
        with transaction.atomic():
            _ensure_admin(actor)
            obj, key = find_object(kind, name)
            content_type = ContentType.objects.get_for_model(obj, for_concrete_model=True)
            marker = (
                ManagedObject.objects.select_for_update().filter(content_type=content_type, object_id=obj.pk).first()
            )
            if marker is None:
                raise ConflictError(f"{kind.replace('_', ' ').capitalize()} {key} is not managed in code.")
            marker.delete()
            audit.record(
                action="policy.released",
                actor=actor,
                target=obj,
                reason=reason,
                metadata={"kind": kind, "key": key, "document": marker.document},
            )

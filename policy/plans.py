"""Plan of a policy document (docs/policy-as-code.md#plan-and-apply): what applying it would change,
computed without writing, with every problem by path.

A section left out is not touched. A section present is authoritative for what it names (the
classifications, the roles, with their members, the datasets' owners, stewards and classifications;
a dataset it does not name is left alone), and for standing grants, for the ones managed in
code: a managed standing grant the document no longer lists is revoked; one made before the
portal managed anything in code, and one released, is left alone until the document names it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.utils import timezone
from django.utils.text import slugify

from governance import durations
from governance.errors import InvalidInput
from governance.models import Classification, Grant, MembershipSource, Role, RoleKind, RoleMembership
from governance.services.classifications import CLASSIFICATION_FIELDS, classification_check
from governance.services.standing_grants import standing_grant_check
from quality import as_code as quality_code
from quality.as_code import find_datasets, key_of

from .datasets import plan_datasets
from .document import DocumentError, digest, duration_of, duration_text, until_of, until_text, validate
from .models import ManagedKind, ManagedObject
from .selectors import markers

CLASSIFICATION_KEYS = tuple(CLASSIFICATION_FIELDS)  # what the admin page edits, the service checks
DURATIONS = ("min_duration", "max_duration")
Problems = list[tuple[str, str]]


# --- what a document writes ----------------------------------------------------------------------------


def classification_entry(obj: Classification) -> dict[str, Any]:
    entry: dict[str, Any] = {"slug": obj.slug}
    for name in CLASSIFICATION_KEYS:
        value = getattr(obj, name)
        entry[name] = (
            duration_text(value) if name in DURATIONS else (list(value) if name == "approval_stages" else value)
        )
    return entry


def grantee_of(grant: Grant) -> tuple[str, str]:
    """("role", name) or ("user", username)."""
    if grant.grantee_role is not None:
        return "role", grant.grantee_role.name
    assert grant.grantee_user is not None  # one grantee (the grant_one_grantee constraint)
    return "user", grant.grantee_user.username


def grant_key(kind: str, name: str, level: str, dataset: str) -> str:
    """How the plan and the markers name a standing grant: `role:Finance readers read pg:finance.ledger`."""
    return f"{kind}:{name} {level} {dataset}"


def standing_grants_in_force() -> Any:
    """Standing grants (no source request) in force, with what their key needs."""
    return (
        Grant.objects.active()
        .filter(source_request__isnull=True)
        .select_related("dataset__source", "grantee_role", "grantee_user")
        .order_by("pk")
    )


def is_open(marker: ManagedObject) -> bool:
    """The document that applied the grant gave it no end (`until` left out)."""
    return "until" in marker.spec and marker.spec["until"] is None


def grant_entry(grant: Grant, marker: ManagedObject | None) -> dict[str, Any]:
    kind, name = grantee_of(grant)
    entry: dict[str, Any] = {kind: name, "dataset": key_of(grant.dataset), "level": grant.level}
    if grant.columns:
        entry["columns"] = sorted(grant.columns)
    open_ended = marker is not None and is_open(marker)
    if not open_ended:
        entry["until"] = until_text(grant.ends_at)
    return entry


# --- the plan ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One object to create, change or remove. `fields`: the object as written (created), as it
    was (removed), or {field: [before, after]} (changed). `provision`/`revoke`: the grants the
    engine will provision or revoke on a target because of it."""

    section: str
    action: str  # "created", "changed" or "removed"
    key: str
    fields: dict[str, Any]
    notes: tuple[str, ...] = ()
    provision: int = 0
    revoke: int = 0
    obj: Any = field(default=None, compare=False)
    values: dict[str, Any] = field(default_factory=dict, compare=False)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.action, "key": self.key, "fields": self.fields}
        if self.notes:
            out["notes"] = list(self.notes)
        if self.provision or self.revoke:
            out["grants"] = {"provision": self.provision, "revoke": self.revoke}
        return out


@dataclass(frozen=True)
class Plan:
    """What applying `document` would do. `unmanaged`: objects the document names that are not yet
    managed in code (apply marks them; that alone changes no policy and is not counted)."""

    document: dict[str, Any]
    digest: str
    changes: tuple[Change, ...]
    quality: Any = field(default=None, compare=False)  # quality.as_code.Plan of the `quality` section
    unmanaged: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.changes) + (self.quality.changes if self.quality is not None else 0)

    def of(self, action: str) -> int:
        own = sum(c.action == action for c in self.changes)
        return own + (self.quality.count(action) if self.quality is not None else 0)

    @property
    def provisions(self) -> int:
        return sum(c.provision for c in self.changes)

    @property
    def revokes(self) -> int:
        return sum(c.revoke for c in self.changes)

    def as_dict(self) -> dict[str, Any]:
        sections: dict[str, list[dict[str, Any]]] = {}
        for change in self.changes:
            sections.setdefault(change.section, []).append(change.as_dict())
        out: dict[str, Any] = {
            "version": 1,
            "document": self.digest,
            "changes": self.count,
            "grants": {"provision": self.provisions, "revoke": self.revokes},
            "sections": sections,
            "unmanaged": list(self.unmanaged),
        }
        if self.quality is not None:
            out["quality"] = self.quality.as_dict()
        return out

    def summary(self, applied: bool = False) -> str:
        if not self.count:
            text = "No changes: the portal matches the document."
        else:
            verbs = ("created", "changed", "removed") if applied else ("to create", "to change", "to remove")
            text = ", ".join(f"{self.of(a)} {v}" for a, v in zip(("created", "changed", "removed"), verbs, strict=True))
            if self.provisions or self.revokes:
                grants = "provisioned" if applied else "to provision"
                revoked = "revoked" if applied else "to revoke"
                text += f"; grants: {self.provisions} {grants}, {self.revokes} {revoked}"
            text += "."
        if self.unmanaged:
            n = len(self.unmanaged)
            text += f" {n} object{'s' if n != 1 else ''} {'marked' if applied else 'to mark'} as managed in code."
        return text

    def render(self, applied: bool = False) -> str:
        """For a person: `+` created, `~` changed (field before → after), `-` removed."""
        lines: list[str] = []
        section = ""
        for change in self.changes:
            if change.section != section:
                section = change.section
                lines.append(section)
            if change.action == "changed":
                detail = "; ".join(f"{k} {_shown(b)} → {_shown(a)}" for k, (b, a) in change.fields.items())
                lines.append(f"  ~ {change.key}: {detail}")
            elif change.action == "created":
                detail = ", ".join(f"{k} {_shown(v)}" for k, v in change.fields.items())
                lines.append(f"  + {change.key}" + (f": {detail}" if detail else ""))
            else:
                lines.append(f"  - {change.key}")
            lines.extend(f"      ({note})" for note in change.notes)
        if self.quality is not None and self.quality.changes:
            lines.append("quality")
            lines.extend("  " + line for line in self.quality.render(applied).splitlines()[:-1])
        lines.append(self.summary(applied))
        return "\n".join(lines) + "\n"


def _shown(value: Any) -> str:
    if isinstance(value, str) and value and len(value) <= 60 and "\n" not in value:
        return value
    return json.dumps(value, default=str)


def plan(document: Any, actor: Any = None, *, lock: bool = False) -> Plan:
    """What applying `document` would change (nothing is written), or DocumentError with every
    problem by path. `lock`: the rows it would change are locked (apply re-plans so)."""
    doc = validate(document)
    problems: Problems = []
    changes: list[Change] = []
    unmanaged: list[str] = []
    if "classifications" in doc:
        changes += _classifications(doc["classifications"], lock, problems, unmanaged)
    if "roles" in doc:
        changes += _roles(doc["roles"], lock, problems, unmanaged)
    if "standing_grants" in doc:
        changes += _standing_grants(doc["standing_grants"], lock, problems, unmanaged)
    if "datasets" in doc:
        changes += plan_datasets(doc["datasets"], lock, problems, unmanaged)
    quality = None
    if "quality" in doc:
        try:
            quality = quality_code.plan(doc["quality"], actor, lock=lock)
        except DocumentError as exc:
            problems += [(f"quality.{path}" if path != "document" else "quality", m) for path, m in exc.problems]
    if problems:
        raise DocumentError(problems)
    return Plan(doc, digest(doc), tuple(changes), quality, tuple(unmanaged))


def _locked(queryset: Any, lock: bool) -> Any:
    return queryset.select_for_update(of=("self",)) if lock else queryset


def _where(path: str, exc: InvalidInput) -> tuple[str, str]:
    return (f"{path}.{exc.field}" if exc.field else path, exc.message)


def _duplicates(
    entries: list[dict[str, Any]], key: Callable[[dict[str, Any]], Any], section: str, name: str, problems: Problems
) -> None:
    seen: dict[Any, int] = {}
    for index, entry in enumerate(entries):
        value = key(entry)
        if value in seen:
            problems.append((f"{section}[{index}].{name}", f"names {section}[{seen[value]}] again."))
        seen.setdefault(value, index)


# --- classifications -----------------------------------------------------------------------------------


def _classifications(
    entries: list[dict[str, Any]], lock: bool, problems: Problems, unmanaged: list[str]
) -> list[Change]:
    _duplicates(entries, lambda e: e["slug"], "classifications", "slug", problems)
    rows = {c.slug: c for c in _locked(Classification.objects.all(), lock)}
    managed = markers(ManagedKind.CLASSIFICATION)
    changes = []
    for index, entry in enumerate(entries):
        path = f"classifications[{index}]"
        obj = rows.get(entry["slug"])
        if obj is None:
            known = ", ".join(sorted(rows))
            problems.append((f"{path}.slug", f"there is no classification {entry['slug']!r} (known: {known})."))
            continue
        if obj.pk not in managed:
            unmanaged.append(f"classification {obj.slug}")
        wanted = {k: (duration_of(v) if k in DURATIONS else v) for k, v in entry.items() if k != "slug"}
        try:
            classification_check(classification=obj, fields=wanted)
        except InvalidInput as exc:
            problems.append(_where(path, exc))
            continue
        if (
            "name" in wanted
            and wanted["name"] != obj.name
            and any(o.name == wanted["name"] for o in rows.values() if o.pk != obj.pk)
        ):
            problems.append((f"{path}.name", f"{wanted['name']!r} is the name of another classification."))
            continue
        before = classification_entry(obj)
        diff = {}
        for name, value in wanted.items():
            if getattr(obj, name) != value:
                after = duration_text(value) if name in DURATIONS else value
                diff[name] = [before[name], after]
        if diff:
            values = {name: wanted[name] for name in diff}
            changes.append(Change("classifications", "changed", obj.slug, diff, obj=obj, values=values))
    return changes


# --- roles ---------------------------------------------------------------------------------------------


def _users(names: set[str]) -> dict[str, Any]:
    return {u.username: u for u in get_user_model().objects.filter(username__in=names)} if names else {}


def _roles(entries: list[dict[str, Any]], lock: bool, problems: Problems, unmanaged: list[str]) -> list[Change]:
    _duplicates(entries, lambda e: e["name"], "roles", "name", problems)
    names = [e["name"] for e in entries]
    rows = {r.name: r for r in _locked(Role.objects.filter(name__in=names).select_related("owner"), lock)}
    wanted_users = {e["owner"] for e in entries if e.get("owner")} | {m for e in entries for m in e.get("members", [])}
    users = _users(wanted_users)
    members: dict[int, dict[str, RoleMembership]] = {}
    open_admin = RoleMembership.objects.filter(
        role__in=list(rows.values()), removed_at__isnull=True, managed_by=MembershipSource.ADMIN
    ).select_related("user")
    for membership in open_admin:
        members.setdefault(membership.role_id, {})[membership.user.username] = membership
    managed = markers(ManagedKind.ROLE)
    slugs = dict(Role.objects.values_list("slug", "name"))
    changes = []
    for index, entry in enumerate(entries):
        path = f"roles[{index}]"
        for at, name in [("owner", entry.get("owner"))] + [
            (f"members[{i}]", m) for i, m in enumerate(entry.get("members", []))
        ]:
            if name and name not in users:
                problems.append((f"{path}.{at}", f"there is no user {name!r}."))
        if any(p.startswith(path + ".") for p, _ in problems):
            continue
        role = rows.get(entry["name"])
        fields: dict[str, Any] = {k: entry[k] for k in ("kind", "description", "owner") if k in entry}
        values: dict[str, Any] = {k: (users[v] if k == "owner" and v else v) for k, v in fields.items()}
        if "owner" in values and not values["owner"]:
            values["owner"] = None
        wanted_members = sorted(entry["members"]) if "members" in entry else None
        if role is None:
            slug = slugify(entry["name"].strip())
            if not slug or slug in slugs:
                problems.append(
                    (f"{path}.name", f"{entry['name']!r} makes the same address (slug) as the role {slugs[slug]!r}.")
                    if slug
                    else (f"{path}.name", "a role's name needs a letter or a digit (its address is made of them).")
                )
                continue
            slugs[slug] = entry["name"]
            created: dict[str, Any] = {
                "kind": fields.get("kind", RoleKind.HUMAN),
                **{k: v for k, v in fields.items() if k != "kind"},
            }
            if wanted_members:
                created["members"] = wanted_members
            adds = [users[m] for m in wanted_members or []]
            changes.append(Change("roles", "created", entry["name"], created, values={**values, "add": adds}))
            continue
        if role.pk not in managed:
            unmanaged.append(f"role {role.name}")
        before: dict[str, Any] = {
            "kind": role.kind,
            "description": role.description,
            "owner": role.owner.username if role.owner else None,
        }
        diff: dict[str, list[Any]] = {
            k: [before[k], fields[k] or None if k == "owner" else fields[k]] for k in fields if before[k] != fields[k]
        }
        if "owner" in diff and diff["owner"][0] == diff["owner"][1]:
            del diff["owner"]
        current = members.get(role.pk, {})
        add: list[Any] = []
        remove: list[RoleMembership] = []
        if wanted_members is not None and sorted(current) != wanted_members:
            diff["members"] = [sorted(current), wanted_members]
            add = [users[m] for m in wanted_members if m not in current]
            remove = [current[m] for m in sorted(current) if m not in wanted_members]
        if diff:
            update = {k: values[k] for k in diff if k != "members"}
            changes.append(
                Change("roles", "changed", role.name, diff, obj=role, values={**update, "add": add, "remove": remove})
            )
    return changes


# --- standing grants -----------------------------------------------------------------------------------


def _standing_grants(
    entries: list[dict[str, Any]], lock: bool, problems: Problems, unmanaged: list[str]
) -> list[Change]:
    grants = list(_locked(standing_grants_in_force(), lock))
    managed = markers(ManagedKind.STANDING_GRANT)
    existing: dict[str, Grant] = {}
    for grant in grants:
        kind, name = grantee_of(grant)
        existing.setdefault(grant_key(kind, name, grant.level, key_of(grant.dataset)), grant)
    roles = {r.name: r for r in Role.objects.filter(name__in=[e["role"] for e in entries if "role" in e])}
    users = _users({e["user"] for e in entries if "user" in e})
    seen: dict[str, int] = {}
    changes = []
    for index, entry in enumerate(entries):
        path = f"standing_grants[{index}]"
        kind = "role" if "role" in entry else "user"
        grantee = (roles if kind == "role" else users).get(entry[kind])
        if grantee is None:
            problems.append((f"{path}.{kind}", f"there is no {kind} {entry[kind]!r}."))
            continue
        try:
            (dataset,) = find_datasets([entry["dataset"]], what=f"{path}.dataset")
            until = until_of(entry["until"]) if "until" in entry else None
        except DocumentError as exc:
            problems += exc.problems
            continue
        except ValueError:
            problems.append((f"{path}.until", f"{entry['until']!r} is not a date."))
            continue
        key = grant_key(kind, entry[kind], entry["level"], key_of(dataset))
        if key in seen:
            problems.append((f"{path}.dataset", f"standing_grants[{seen[key]}] is the same grant ({key})."))
            continue
        seen[key] = index
        columns = sorted(entry.get("columns", []))
        ends_at = until or timezone.now() + durations.LONGEST
        values = {
            "dataset": dataset,
            "level": entry["level"],
            "columns": columns,
            "ends_at": ends_at,
            f"grantee_{kind}": grantee,
            "spec": {"until": entry.get("until")},
        }
        try:
            standing_grant_check(
                dataset=dataset,
                level=entry["level"],
                columns=columns,
                ends_at=ends_at,
                **{f"grantee_{kind}": grantee},
            )
        except InvalidInput as exc:
            problems.append(_where(path, exc))
            continue
        shown = {"columns": columns} if columns else {}
        shown["until"] = entry.get("until", "open (ten years)")
        grant = existing.get(key)
        if grant is None:
            changes.append(
                Change(
                    "standing_grants", "created", key, shown, ("provisioned on the target",), provision=1, values=values
                )
            )
            continue
        marker = managed.get(grant.pk)
        if marker is None:
            unmanaged.append(f"standing grant {key}")
        diff: dict[str, list[Any]] = {}
        if sorted(grant.columns) != columns:
            diff["columns"] = [sorted(grant.columns), columns]
        was_open = marker is not None and is_open(marker)
        if until is None and marker is not None and not was_open:
            diff["until"] = [until_text(grant.ends_at), "open (ten years)"]
        elif until is not None and (was_open or grant.ends_at != until):
            diff["until"] = ["open (ten years)" if was_open else until_text(grant.ends_at), entry["until"]]
        if diff:
            changes.append(
                Change(
                    "standing_grants",
                    "changed",
                    key,
                    diff,
                    (f"grant #{grant.pk} revoked, provisioned anew",),
                    provision=1,
                    revoke=1,
                    obj=grant,
                    values=values,
                )
            )
    for key, grant in sorted(existing.items()):
        if key not in seen and grant.pk in managed:
            changes.append(
                Change(
                    "standing_grants",
                    "removed",
                    key,
                    {},
                    (f"grant #{grant.pk} revoked on the target",),
                    revoke=1,
                    obj=grant,
                )
            )
    return changes

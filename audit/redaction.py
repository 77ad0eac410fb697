"""Redacting a person from every display of the audit trail, without editing one event.

An event's MAC and the sealed chain cover the row as it was written, `actor_username` included
(audit.chain): changing a stored event would make `audit_verify` report it as `modified`, which is
exactly what the chain is for. So a person whose data must go (a data-subject erasure of a portal
user, docs/subjects.md) is redacted by a rule, an append-only `ActorRedaction` row, that every
display applies: the admin, the API's list, detail and export. What is shown:

- the actor of every event whose `actor_id` is the person's: the pseudonym;
- every word (a run of letters, digits and ``.@+-_``) of the target's text, the reason, and the
  string values of changes and metadata that equals one of the redacted values: the pseudonym; an
  event about the person's account (target `accounts.user` with their id) shows the pseudonym as
  its target.

The redacted values are kept only as keyed digests (HMAC-SHA256 under the audit key, over the
case-folded value), so a redaction never stores what it hides. What stays stored, and is said so in
docs/subjects.md: the events' rows themselves (the chain covers them), archives already written and
copies already sent to a SIEM.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.db import transaction

from . import chain
from .models import ActorRedaction, AuditEvent

_WORD = re.compile(r"[\w.@+-]+")
USER_TARGET = "accounts.user"


def digest(value: str) -> str:
    """The keyed digest a redaction keeps of a value (case-insensitive)."""
    return hmac.digest(chain.key(), b"redaction|" + value.strip().casefold().encode(), "sha256").hex()


@dataclass
class Redactions:
    """The redactions in force, applied to events as they are displayed."""

    by_actor: dict[int, str] = field(default_factory=dict)
    by_digest: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.by_actor)

    def text(self, value: str) -> str:
        if not value or not self.by_digest:
            return value

        def swap(match: re.Match[str]) -> str:
            word = match.group(0)
            for candidate in (word, word.strip(".-+@")):
                if candidate and (pseudonym := self.by_digest.get(digest(candidate))):
                    return pseudonym
            return word

        return _WORD.sub(swap, value)

    def value(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.value(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.value(v) for v in value]
        return value

    def row(self, row: dict[str, Any]) -> dict[str, Any]:
        """A dict of event fields (as `values()` gives them) with the redactions applied."""
        if not self:
            return row
        out = dict(row)
        actor_id = row.get("actor_id", row.get("actor"))
        if actor_id is not None and actor_id in self.by_actor:
            out["actor_username"] = self.by_actor[actor_id]
        elif "actor_username" in out:
            out["actor_username"] = self.text(out["actor_username"] or "")
        if row.get("target_type") == USER_TARGET and _int(row.get("target_id")) in self.by_actor:
            out["target_repr"] = self.by_actor[_int(row.get("target_id"))]  # type: ignore[index]
        elif "target_repr" in out:
            out["target_repr"] = self.text(out["target_repr"] or "")
        for key in ("reason", "changes", "metadata", "user_agent"):
            if key in out:
                out[key] = self.value(out[key])
        return out

    def event(self, event: AuditEvent) -> AuditEvent:
        """An unsaved copy of `event` for display (never saved: events are append-only)."""
        if not self:
            return event
        fields = {f: getattr(event, f) for f in ("actor_username", "target_type", "target_id", "target_repr")}
        fields.update(reason=event.reason, changes=event.changes, metadata=event.metadata, user_agent=event.user_agent)
        shown = self.row({**fields, "actor_id": event.actor_id})
        copy = AuditEvent(pk=event.pk)
        copy.__dict__.update({k: v for k, v in event.__dict__.items() if k != "_state"})
        for key, value in shown.items():
            if key != "actor_id":
                setattr(copy, key, value)
        copy._state.adding = False
        return copy


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def current() -> Redactions:
    """The redactions in force (one query; none: an empty, falsy Redactions)."""
    found = Redactions()
    for actor_id, pseudonym, digests in ActorRedaction.objects.values_list("actor_id", "pseudonym", "digests"):
        found.by_actor[actor_id] = pseudonym
        for d in digests:
            found.by_digest[d] = pseudonym
    return found


def actor_redaction_record(
    *, actor_id: int, values: Iterable[str], pseudonym: str, reference: str, approved_by: Any, recorded_by: Any
) -> ActorRedaction:
    """Record that the person `actor_id` is shown as `pseudonym` in the trail from now on, with its
    audit event (`audit.actor_redacted`: how many events it covers, never the values), in the
    caller's transaction. A person is redacted once: a second redaction of the same actor is refused."""
    from . import services as audit

    digests = sorted({digest(v) for v in values if v and v.strip()})
    with transaction.atomic():
        if ActorRedaction.objects.filter(actor_id=actor_id).exists():
            raise ValueError("This person is redacted from the trail already.")
        redaction = ActorRedaction.objects.create(
            actor_id=actor_id,
            pseudonym=pseudonym,
            digests=digests,
            reference=reference[:100],
            approved_by=approved_by,
            recorded_by=recorded_by,
        )
        audit.record(
            action="audit.actor_redacted",
            actor=recorded_by,
            target=redaction,
            reason=reference[:500],
            metadata={
                "pseudonym": pseudonym,
                "events": AuditEvent.objects.filter(actor_id=actor_id).count(),
                "values": len(digests),
                "approved_by": getattr(approved_by, "pk", None),
            },
        )
    return redaction


def filter_actor(queryset: Any, username: str) -> Any:
    """Events whose actor is shown as `username`: a pseudonym finds the redacted person's events,
    a redacted username finds none (searching by it would link it to the pseudonym). One query on
    the (small) redaction table before the events' own."""
    from django.db.models import Q

    found = list(
        ActorRedaction.objects.filter(Q(pseudonym=username) | Q(digests__contains=[digest(username)])).values_list(
            "actor_id", "pseudonym"
        )
    )
    if not found:
        return queryset.filter(actor_username=username)
    shown_as = [actor_id for actor_id, pseudonym in found if pseudonym == username]
    return queryset.filter(actor_id__in=shown_as) if shown_as else queryset.none()


def search_hides(term: str, redactions: Redactions | None = None) -> bool:
    """Whether a search term names a redacted value (the admin's search then finds nothing)."""
    found = redactions if redactions is not None else current()
    if not found.by_digest:
        return False
    words = set(_WORD.findall(term or "")) | {(term or "").strip()}
    return any(digest(w) in found.by_digest for w in words if w)

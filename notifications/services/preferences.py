"""A person's notification preferences: the one write path (the portal's page calls it), audited."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django.db import transaction

from audit import services as audit
from governance.errors import InvalidInput, NotPermitted
from governance.services.common import refusal_recorded

from ..models import ROUTES, Channel, Kind, Preference

MUTABLE = [k for k in Kind.values if k != Kind.DIGEST]


def preference_set(
    *,
    user: Any,
    actor: Any,
    channel: str,
    digest: bool,
    muted: Iterable[str],
    routes: Mapping[str, str] | None = None,
) -> Preference:
    """Set how `user` is told: the channel (of every kind `routes` does not name), per kind "email",
    "slack" or "both", a daily digest instead of a message each, and the kinds they never want to
    hear of. Only the person themselves changes their preferences."""
    muted = sorted(set(muted))
    routes = {k: v for k, v in sorted((routes or {}).items()) if v}
    with refusal_recorded(action="notification_preference.set", actor=actor, target=user), transaction.atomic():
        if actor is None or actor.pk != user.pk:
            raise NotPermitted("Only the person themselves can change their notification preferences.")
        if channel not in Channel.values:
            raise InvalidInput(f"Unknown channel {channel!r}.", field="channel")
        unknown = [k for k in muted if k not in MUTABLE]
        if unknown:
            raise InvalidInput(f"Unknown kind of notification {unknown[0]!r}.", field="muted")
        for kind, route in routes.items():
            if kind not in MUTABLE:
                raise InvalidInput(f"Unknown kind of notification {kind!r}.", field="routes")
            if route not in ROUTES:
                raise InvalidInput(f"Unknown channel {route!r} for {kind}: use email, slack or both.", field="routes")
        pref = Preference.objects.select_for_update().filter(user=user).first() or Preference(user=user)
        before = {
            "channel": pref.channel,
            "digest": pref.digest,
            "muted": list(pref.muted),
            "routes": dict(pref.routes),
        }
        pref.channel, pref.digest, pref.muted, pref.routes = channel, digest, muted, routes
        after = {"channel": channel, "digest": digest, "muted": muted, "routes": routes}
        if before == after and not pref._state.adding:
            return pref
        pref.save()
        audit.record(
            action="notification_preference.changed",
            actor=actor,
            target=user,
            changes=audit.diff(before, after),
        )
    return pref

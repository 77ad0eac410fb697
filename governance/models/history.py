"""Row-level history of the governed tables, by PostgreSQL triggers (django-pghistory).

Services record *why* a change happened in the audit trail; these triggers record *that* it happened,
whatever the path: the ORM, a migration, a DBA's `psql` session. Each insert, update and delete of a
tracked row writes an event row (the new values, or the old ones for a delete) in the same
transaction, with the context the portal attached to the connection (user, URL, request id, source)
when there is one. A change with no context is a change made behind the portal's back. The admin
lists them under *Audit trail → Events* beside the audit events.

Secrets are not copied into the history (the encrypted password columns are excluded).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pghistory


def governed(*, exclude: tuple[str, ...] = ()) -> Callable[[Any], Any]:
    return pghistory.track(
        pghistory.InsertEvent(),
        pghistory.UpdateEvent(),
        pghistory.DeleteEvent(),
        exclude=list(exclude) or None,
    )

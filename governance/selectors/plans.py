"""The approver's plan: what a request (or a grant) runs on its target once approved.

One selector for every place that shows it (the admin's request page, the portal's request page and
preview, the API's request detail), so that they all show the same lines: SQL on PostgreSQL, the
statement group added to the grantee's IAM policy on AWS (`governance/backends.py` picks which).
"""

from __future__ import annotations

from typing import Any

from ..backends import backend_for, has_backend
from ..models import UNPROVISIONED_LEVELS, AccessRequest, Grant


def plan_preview(subject: AccessRequest | Grant) -> list[str]:
    """The plan's lines, rendered without reaching the target; empty for a source of a kind the
    portal does not provision."""
    source: Any = subject.dataset.source
    if not has_backend(source) or subject.level in UNPROVISIONED_LEVELS:
        return []  # aggregate access: nothing on the target (docs/privacy.md)
    try:
        return backend_for(source).plan_text(subject)
    except ValueError as exc:
        # The adapter refuses what the source's registration lacks (an empty database name, say):
        # the request still shows, with why no plan can be rendered, never a 500.
        return [f"-- No plan can be rendered for {source.name}: {exc}."]

"""Plans: deterministic names and least-privilege documents, linted with parliament."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..errors import PermanentError
from .targets import _SOURCE, LEVELS, LIST_ACTION, POLICY_VERSION, READ_ACTIONS, WRITE_ACTIONS, IamPrincipal, S3Location


def policy_path(source: str) -> str:
    if not _SOURCE.match(source):
        raise PermanentError(f"{source!r} cannot name an IAM path.")
    return f"/governance/{source}/"


def policy_name(principal: IamPrincipal, location: S3Location, *, dataset_id: int) -> str:
    """``gov-<kind>-<name>-d<dataset>-<hash>``, at most 128 characters, the same every time."""
    digest = hashlib.sha256(f"{principal}|{location}|{dataset_id}".encode()).hexdigest()[:10]
    head = f"gov-{principal.kind}-{principal.name}"[: 128 - len(f"-d{dataset_id}-{digest}")]
    return f"{head}-d{dataset_id}-{digest}"


def policy_document(location: S3Location, level: str) -> dict[str, Any]:
    """The IAM policy for `level` on `location`: only the prefix, only the level's actions."""
    if level not in LEVELS:
        raise PermanentError(f"Unknown access level {level!r} for S3 (read, write or admin).")
    listing: dict[str, Any] = {"Sid": "ListThePrefix", "Effect": "Allow", "Action": [LIST_ACTION]}
    listing["Resource"] = [location.bucket_arn]
    if location.prefix:
        # Keys under "prefix/" only: a bare "prefix" would also list "prefixes-of-others/..." names.
        listing["Condition"] = {"StringLike": {"s3:prefix": location.list_prefixes}}
    statements: list[dict[str, Any]] = [
        listing,
        {"Sid": "ReadObjects", "Effect": "Allow", "Action": list(READ_ACTIONS), "Resource": [location.objects_arn]},
    ]
    if level == "read":
        statements.append(
            {"Sid": "NoWrites", "Effect": "Deny", "Action": list(WRITE_ACTIONS), "Resource": [location.objects_arn]}
        )
    else:
        statements.append(
            {
                "Sid": "WriteObjects",
                "Effect": "Allow",
                "Action": list(WRITE_ACTIONS),
                "Resource": [location.objects_arn],
            }
        )
    return {"Version": POLICY_VERSION, "Statement": statements}


def render(document: dict[str, Any]) -> str:
    """The one text of a document: what is applied, compared, digested and shown to approvers."""
    return json.dumps(document, indent=2, sort_keys=True)


def lint(document: dict[str, Any]) -> list[str]:
    """parliament's findings on `document` ("ISSUE: detail"), empty when it passes."""
    from parliament import analyze_policy_string

    analyzed = analyze_policy_string(json.dumps(document))
    return sorted(f"{f.issue}: {f.detail}" if f.detail else str(f.issue) for f in analyzed.findings)


@dataclass(frozen=True)
class Plan:
    principal: IamPrincipal
    location: S3Location
    level: str | None  # None: nothing may be held (revoke)
    name: str
    path: str
    document: dict[str, Any] | None

    @property
    def text(self) -> str:
        return render(self.document) if self.document is not None else ""

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{self.principal}|{self.path}{self.name}|{self.text}".encode()).hexdigest()

    def lines(self) -> list[str]:
        """The plan as an approver reads it."""
        head = f"{'Attach' if self.document else 'Detach and delete'} IAM policy {self.path}{self.name}"
        if self.document is None:
            return [f"{head} from {self.principal}"]
        return [f"{head} to {self.principal} ({self.level} on {self.location}):", *self.text.splitlines()]


def plan(*, principal: IamPrincipal, location: S3Location, level: str | None, source: str, dataset_id: int) -> Plan:
    """What should exist for this (principal, dataset): the policy at `level`, or none."""
    document = policy_document(location, level) if level else None
    if document is not None:
        findings = lint(document)
        if findings:
            raise PermanentError("The generated policy fails parliament: " + "; ".join(findings))
    return Plan(
        principal=principal,
        location=location,
        level=level,
        name=policy_name(principal, location, dataset_id=dataset_id),
        path=policy_path(source),
        document=document,
    )

"""AWS adapter: an S3 prefix's IAM policy documents, applied with boto3 and read back; the client,
error classification and policy primitives that :mod:`governance.provisioners.aws_policy` builds on.

The provisioning engine holds one policy per (principal, source) with a statement group per dataset
(:mod:`~governance.provisioners.aws_policy`). This module's :func:`plan`/:func:`apply` keep the
first generation's layout, one policy per (principal, dataset) named by :func:`policy_name`, so
that such policies are recognised and converged (and for the adapter's own tests).

Like :mod:`governance.provisioners.postgres`, this module knows no Django: the caller says who
(:class:`IamPrincipal`), where (:class:`S3Location`) and at which level.

* **Deterministic names** under the portal's path (``/governance/<source>/``), so that applying
  twice changes nothing and the reconciler lists everything the portal manages with one
  ``ListPolicies(PathPrefix=...)``.
* **Least privilege, checked.** Read is ``s3:GetObject`` on ``arn:aws:s3:::bucket/prefix/*`` and
  ``s3:ListBucket`` on the bucket only for keys under the prefix (``s3:prefix`` condition); write
  adds ``s3:PutObject`` and ``s3:DeleteObject`` on the prefix; a read grant also carries an
  explicit Deny of those writes, so another policy's Allow cannot widen it. No ``*`` resource and
  no wildcard action is ever generated, and every document is run through ``parliament``
  (:func:`lint`) before it is applied: a finding is a permanent failure, never a warning.
* **Updates keep IAM's limit of five versions**: a changed document becomes a new default version
  after the oldest non-default ones are deleted; revoking detaches from every entity, deletes the
  non-default versions, then the policy (AWS refuses to delete an attached policy or one with
  versions; moto does not, so the order is ours to keep).
* **Verification reads back** the attachment and the default version's document and compares them
  with the plan: what IAM holds, not what the calls returned.
* Errors become :class:`~governance.provisioners.errors.TransientError` (throttling, endpoint
  unreachable, 5xx: retried) or :class:`~governance.provisioners.errors.PermanentError` (access
  denied, malformed document: shown to an operator), with one-line messages and no credentials.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import unquote

from .errors import PermanentError, TransientError

POLICY_VERSION = "2012-10-17"
MAX_VERSIONS = 5  # IAM's limit of versions per managed policy
READ_ACTIONS = ("s3:GetObject",)
LIST_ACTION = "s3:ListBucket"
WRITE_ACTIONS = ("s3:PutObject", "s3:DeleteObject")
LEVELS = ("read", "write", "admin")  # admin grants the same S3 actions as write

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9!_.'()/=-]{0,255}$")  # S3's "safe characters" (no * or ?), as a dataset name
_IAM_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_SOURCE = re.compile(r"^[a-z0-9_-]{1,100}$")
_TRANSIENT_CODES = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ServiceUnavailable",
    "ServiceFailure",
    "InternalFailure",
    "InternalError",
    "RequestTimeout",
    # Another writer changed the same policy at the same moment, or a retried call's first attempt
    # went through: a retry converges.
    "ConcurrentModification",
    "EntityAlreadyExists",
}


# ---------------------------------------------------------------------------------------------
# What and who
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; empty = the whole bucket)."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if not _BUCKET.match(self.bucket) or ".." in self.bucket:
            raise PermanentError(f"{self.bucket!r} is not a valid S3 bucket name.")
        if not _PREFIX.match(self.prefix) or self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise PermanentError(
                f"{self.prefix!r} is not a usable prefix: S3's safe characters only, no '*' or '?', "
                "no leading or trailing '/'."
            )

    @property
    def objects_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}/{self.prefix}/*" if self.prefix else f"arn:aws:s3:::{self.bucket}/*"

    @property
    def bucket_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}"

    @property
    def list_prefixes(self) -> list[str]:
        return [f"{self.prefix}/", f"{self.prefix}/*"]

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class IamPrincipal:
    """An IAM role or user the portal attaches policies to (it never creates identities)."""

    kind: str  # "role" or "user"
    name: str

    def __post_init__(self) -> None:
        if self.kind not in ("role", "user") or not _IAM_NAME.match(self.name):
            raise PermanentError(f"{self.kind}/{self.name} is not an IAM role or user name (role/NAME or user/NAME).")
        if len(str(self)) > 63:
            raise PermanentError(f"{self} is longer than the 63 characters a mapping holds.")

    @classmethod
    def parse(cls, text: str) -> IamPrincipal:
        """``role/NAME`` or ``user/NAME`` (as stored on a source principal mapping)."""
        kind, _, name = text.partition("/")
        return cls(kind, name)

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class AwsTarget:
    """Where and as whom to call IAM. Empty keys: boto3's ambient credential chain."""

    region: str = "us-east-1"
    endpoint_url: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    account_id: str = ""


# ---------------------------------------------------------------------------------------------
# Plans: deterministic names and documents
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Applying and reading back
# ---------------------------------------------------------------------------------------------


def client(target: AwsTarget, *, timeout: float | None = None) -> Any:
    """An IAM client; with ``timeout`` (a probe): that connect and read timeout, and no retries."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=20)
    if timeout is not None:
        config = Config(retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=timeout, read_timeout=timeout)
    return boto3.client(
        "iam",
        region_name=target.region or "us-east-1",
        endpoint_url=target.endpoint_url or None,
        aws_access_key_id=target.access_key_id or None,
        aws_secret_access_key=target.secret_access_key or None,
        config=config,
    )


def probe(target: AwsTarget, source: str, *, timeout: float) -> None:
    """Whether the IAM endpoint answers: one ``ListPolicies`` under the source's path (an action
    the portal's own policy allows), one item. Raises the classified error when the endpoint does
    not answer (``unreachable``); any answer, an AccessDenied included, means it is there."""
    from botocore.exceptions import ClientError

    iam = client(target, timeout=timeout)
    try:
        with _errors("iam:ListPolicies (probe)"):
            try:
                iam.list_policies(Scope="Local", PathPrefix=policy_path(source), MaxItems=1)
            except ClientError:
                return  # the endpoint answered
    except TransientError as exc:
        if exc.unreachable:
            raise


def _account(iam: Any, target: AwsTarget) -> str:
    if target.account_id:
        return target.account_id
    import boto3

    sts = boto3.client(
        "sts",
        region_name=target.region or "us-east-1",
        endpoint_url=target.endpoint_url or None,
        aws_access_key_id=target.access_key_id or None,
        aws_secret_access_key=target.secret_access_key or None,
    )
    with _errors("sts:GetCallerIdentity"):
        return str(sts.get_caller_identity()["Account"])


def policy_arn(plan: Plan, account: str) -> str:
    return f"arn:aws:iam::{account}:policy{plan.path}{plan.name}"


class _errors:
    """boto3 and botocore exceptions to Transient/PermanentError, one line, no secrets."""

    def __init__(self, what: str) -> None:
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> Literal[False]:
        if exc is None or isinstance(exc, (TransientError, PermanentError)):
            return False
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            EndpointConnectionError,
            HTTPClientError,
            NoCredentialsError,
            ParamValidationError,
            PartialCredentialsError,
        )
        from botocore.exceptions import (
            ConnectionError as BotoConnectionError,
        )

        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", "Error"))
            message = f"{self.what}: {code}: {str(error.get('Message', ''))[:300]}"
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if code in _TRANSIENT_CODES or status >= 500:
                raise TransientError(message) from None
            raise PermanentError(message) from None
        if isinstance(exc, EndpointConnectionError):
            raise TransientError(f"{self.what}: the IAM endpoint could not be reached", unreachable=True) from None
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError, ParamValidationError)):
            raise PermanentError(f"{self.what}: {type(exc).__name__}: check the source's credentials") from None
        if isinstance(exc, (BotoConnectionError, HTTPClientError)):
            # Connect or read timeout, TLS or proxy failure, connection closed mid-call: the
            # endpoint did not answer.
            raise TransientError(f"{self.what}: {type(exc).__name__}", unreachable=True) from None
        if isinstance(exc, BotoCoreError):
            raise TransientError(f"{self.what}: {type(exc).__name__}") from None
        return False


def _is(exc: BaseException, code: str) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") == code


def _entities(iam: Any, arn: str) -> dict[str, list[dict[str, Any]]]:
    """Every role, user and group the policy is attached to, all pages."""
    out: dict[str, list[dict[str, Any]]] = {"PolicyRoles": [], "PolicyUsers": [], "PolicyGroups": []}
    for page in iam.get_paginator("list_entities_for_policy").paginate(PolicyArn=arn):
        for key in out:
            out[key] += page.get(key, [])
    return out


def _attach_call(principal: IamPrincipal, verb: str) -> str:
    return f"{verb}_{principal.kind}_policy"  # attach_role_policy, detach_user_policy, ...


def _default_document(iam: Any, arn: str) -> tuple[str, dict[str, Any]]:
    policy = iam.get_policy(PolicyArn=arn)["Policy"]
    version = policy["DefaultVersionId"]
    document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
    if isinstance(document, str):  # boto3 decodes it; a raw endpoint may hand back URL-encoded JSON
        document = json.loads(unquote(document))
    return version, document


def _attached(iam: Any, principal: IamPrincipal, path: str) -> set[str]:
    key = {"role": "RoleName", "user": "UserName"}[principal.kind]
    arns: set[str] = set()
    for page in iam.get_paginator(f"list_attached_{principal.kind}_policies").paginate(
        **{key: principal.name, "PathPrefix": path}
    ):
        arns |= {p["PolicyArn"] for p in page["AttachedPolicies"]}
    return arns


def _write(
    iam: Any,
    *,
    arn: str,
    name: str,
    path: str,
    text: str,
    current: dict[str, Any] | None,
    document: dict[str, Any],
    description: str,
) -> list[str]:
    """Create the policy, or make `document` its new default version (the oldest non-default
    versions deleted first, at IAM's limit of five); nothing when it already holds it."""
    done: list[str] = []
    if current is None:
        with _errors(f"iam:CreatePolicy {name}"):
            iam.create_policy(PolicyName=name, Path=path, PolicyDocument=text, Description=description)
        return [f"CreatePolicy {path}{name}"]
    if current == document:
        return done
    with _errors(f"iam:ListPolicyVersions {name}"):
        versions = iam.list_policy_versions(PolicyArn=arn)["Versions"]
        old = sorted((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
        for version in old[: max(0, len(versions) - (MAX_VERSIONS - 1))]:
            iam.delete_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
            done.append(f"DeletePolicyVersion {name} {version['VersionId']}")
    with _errors(f"iam:CreatePolicyVersion {name}"):
        iam.create_policy_version(PolicyArn=arn, PolicyDocument=text, SetAsDefault=True)
    done.append(f"CreatePolicyVersion {name} (default)")
    return done


def apply(target: AwsTarget, plan: Plan) -> list[str]:
    """Make IAM hold exactly `plan` for its (principal, dataset); returns what was done, in order."""
    iam = client(target)
    arn = policy_arn(plan, _account(iam, target))
    key = {"role": "RoleName", "user": "UserName"}[plan.principal.kind]
    done: list[str] = []
    if plan.document is None:
        return _remove_arn(iam, plan.name, arn)
    with _errors(f"iam:GetPolicy {plan.name}"):
        try:
            _, current = _default_document(iam, arn)
        except Exception as exc:
            if not _is(exc, "NoSuchEntity"):
                raise
            current = None
    done += _write(
        iam,
        arn=arn,
        name=plan.name,
        path=plan.path,
        text=plan.text,
        current=current,
        document=plan.document,
        description=f"Managed by the data access portal: {plan.level} on {plan.location}",
    )
    with _errors(f"iam:ListAttached{plan.principal.kind.title()}Policies {plan.principal}"):
        attached = arn in _attached(iam, plan.principal, plan.path)
    if not attached:
        with _errors(f"iam:Attach{plan.principal.kind.title()}Policy {plan.principal}"):
            getattr(iam, _attach_call(plan.principal, "attach"))(**{key: plan.principal.name, "PolicyArn": arn})
        done.append(f"Attach{plan.principal.kind.title()}Policy {plan.name} to {plan.principal}")
    return done


def remove_policy(target: AwsTarget, arn: str) -> list[str]:
    """Detach, delete versions, delete: any policy by ARN (the reconciler's unexplained ones)."""
    return _remove_arn(client(target), arn.rsplit("/", 1)[-1], arn)


def detach_others(target: AwsTarget, arn: str, *, keep: str) -> list[str]:
    """Detach the policy from every entity but `keep` ("user/NAME" or "role/NAME")."""
    iam = client(target)
    name = arn.rsplit("/", 1)[-1]
    done: list[str] = []
    with _errors(f"iam:ListEntitiesForPolicy {name}"):
        entities = _entities(iam, arn)
    with _errors(f"iam:Detach {name}"):
        for role in entities.get("PolicyRoles", []):
            if f"role/{role['RoleName']}" != keep:
                iam.detach_role_policy(RoleName=role["RoleName"], PolicyArn=arn)
                done.append(f"DetachRolePolicy {name} from role/{role['RoleName']}")
        for user in entities.get("PolicyUsers", []):
            if f"user/{user['UserName']}" != keep:
                iam.detach_user_policy(UserName=user["UserName"], PolicyArn=arn)
                done.append(f"DetachUserPolicy {name} from user/{user['UserName']}")
        for group in entities.get("PolicyGroups", []):
            iam.detach_group_policy(GroupName=group["GroupName"], PolicyArn=arn)
            done.append(f"DetachGroupPolicy {name} from group/{group['GroupName']}")
    return done


def _remove_arn(iam: Any, name: str, arn: str) -> list[str]:
    """Detach from every entity, delete the non-default versions, delete the policy. Idempotent."""
    done: list[str] = []
    with _errors(f"iam:GetPolicy {name}"):
        try:
            iam.get_policy(PolicyArn=arn)
        except Exception as exc:
            if _is(exc, "NoSuchEntity"):
                return done  # already gone
            raise
    with _errors(f"iam:ListEntitiesForPolicy {name}"):
        entities = _entities(iam, arn)
    with _errors(f"iam:Detach {name}"):
        for role in entities.get("PolicyRoles", []):
            iam.detach_role_policy(RoleName=role["RoleName"], PolicyArn=arn)
            done.append(f"DetachRolePolicy {name} from role/{role['RoleName']}")
        for user in entities.get("PolicyUsers", []):
            iam.detach_user_policy(UserName=user["UserName"], PolicyArn=arn)
            done.append(f"DetachUserPolicy {name} from user/{user['UserName']}")
        for group in entities.get("PolicyGroups", []):
            iam.detach_group_policy(GroupName=group["GroupName"], PolicyArn=arn)
            done.append(f"DetachGroupPolicy {name} from group/{group['GroupName']}")
    with _errors(f"iam:DeletePolicyVersion {name}"):
        for version in iam.list_policy_versions(PolicyArn=arn)["Versions"]:
            if not version["IsDefaultVersion"]:
                iam.delete_policy_version(PolicyArn=arn, VersionId=version["VersionId"])
                done.append(f"DeletePolicyVersion {name} {version['VersionId']}")
    with _errors(f"iam:DeletePolicy {name}"):
        iam.delete_policy(PolicyArn=arn)
    done.append(f"DeletePolicy {name}")
    return done


def verify(target: AwsTarget, plan: Plan) -> list[str]:
    """Differences between `plan` and IAM: the policy's default document, and its attachment."""
    iam = client(target)
    arn = policy_arn(plan, _account(iam, target))
    problems: list[str] = []
    with _errors(f"iam:GetPolicy {plan.name}"):
        try:
            _, current = _default_document(iam, arn)
        except Exception as exc:
            if not _is(exc, "NoSuchEntity"):
                raise
            current = None
    if plan.document is None:
        if current is not None:
            problems.append(f"policy {plan.name} still exists")
        return problems
    if current is None:
        return [f"policy {plan.name} does not exist"]
    if current != plan.document:
        problems.append(f"policy {plan.name}: the default version is not the approved document")
    with _errors(f"iam:ListAttached {plan.principal}"):
        if arn not in _attached(iam, plan.principal, plan.path):
            problems.append(f"policy {plan.name} is not attached to {plan.principal}")
    return problems


# ---------------------------------------------------------------------------------------------
# Observing everything the portal manages (for the reconciler)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManagedPolicy:
    name: str
    arn: str
    document: dict[str, Any]
    attached_to: frozenset[str]  # "role/NAME", "user/NAME", "group/NAME"


def observe(target: AwsTarget, source: str) -> Iterator[ManagedPolicy]:
    """Every policy under the source's path, its default document and where it is attached."""
    iam = client(target)
    path = policy_path(source)
    with _errors(f"iam:ListPolicies {path}"):
        for page in iam.get_paginator("list_policies").paginate(Scope="Local", PathPrefix=path):
            for policy in page["Policies"]:
                arn = policy["Arn"]
                _, document = _default_document(iam, arn)
                entities = _entities(iam, arn)
                attached = (
                    {f"role/{r['RoleName']}" for r in entities.get("PolicyRoles", [])}
                    | {f"user/{u['UserName']}" for u in entities.get("PolicyUsers", [])}
                    | {f"group/{g['GroupName']}" for g in entities.get("PolicyGroups", [])}
                )
                yield ManagedPolicy(policy["PolicyName"], arn, document, frozenset(attached))


def portal_policy_document(*, account: str, source: str) -> dict[str, Any]:
    """The least-privilege IAM policy for the portal's own identity on one source (docs/aws.md):
    it manages policies under its path only, attaches and detaches only those, and lists."""
    policies = f"arn:aws:iam::{account}:policy{policy_path(source)}*"
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": "ManageOwnPolicies",
                "Effect": "Allow",
                "Action": [
                    "iam:CreatePolicy",
                    "iam:CreatePolicyVersion",
                    "iam:DeletePolicy",
                    "iam:DeletePolicyVersion",
                    "iam:GetPolicy",
                    "iam:GetPolicyVersion",
                    "iam:ListEntitiesForPolicy",
                    "iam:ListPolicyVersions",
                ],
                "Resource": [policies],
            },
            {
                "Sid": "AttachOnlyOwnPolicies",
                "Effect": "Allow",
                "Action": [
                    "iam:AttachRolePolicy",
                    "iam:AttachUserPolicy",
                    "iam:DetachGroupPolicy",
                    "iam:DetachRolePolicy",
                    "iam:DetachUserPolicy",
                ],
                "Resource": [
                    f"arn:aws:iam::{account}:group/*",
                    f"arn:aws:iam::{account}:role/*",
                    f"arn:aws:iam::{account}:user/*",
                ],
                "Condition": {"ArnLike": {"iam:PolicyARN": [policies]}},
            },
            {
                "Sid": "ReadAttachments",
                "Effect": "Allow",
                "Action": ["iam:ListAttachedRolePolicies", "iam:ListAttachedUserPolicies"],
                "Resource": [f"arn:aws:iam::{account}:role/*", f"arn:aws:iam::{account}:user/*"],
            },
            {"Sid": "FindOwnPolicies", "Effect": "Allow", "Action": ["iam:ListPolicies"], "Resource": ["*"]},
            # Last-used facts (provisioners/aws_usage.py): when each grantee's identity last used S3.
            # (IAM's resource types for the report are all four; the portal asks it of roles and users.)
            {
                "Sid": "ReadLastAccessed",
                "Effect": "Allow",
                "Action": ["iam:GenerateServiceLastAccessedDetails"],
                "Resource": [f"arn:aws:iam::{account}:{kind}/*" for kind in ("group", "policy", "role", "user")],
            },
            {
                "Sid": "FindIdentities",
                "Effect": "Allow",
                "Action": ["iam:GetRole", "iam:GetUser"],
                "Resource": [f"arn:aws:iam::{account}:role/*", f"arn:aws:iam::{account}:user/*"],
            },
            {
                "Sid": "GetLastAccessed",
                "Effect": "Allow",
                "Action": ["iam:GetServiceLastAccessedDetails"],
                "Resource": ["*"],
            },
        ],
    }

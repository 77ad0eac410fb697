"""Applying and reading back: the IAM client, error classification, apply, remove, verify."""

from __future__ import annotations

import json
from typing import Any, Literal
from urllib.parse import unquote

from ..errors import PermanentError, TransientError
from .plans import Plan, policy_path
from .targets import MAX_VERSIONS, AwsTarget, IamPrincipal

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

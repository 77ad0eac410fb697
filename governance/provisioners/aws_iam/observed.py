"""Observing everything the portal manages (for the reconciler), and the portal's own policy."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .calls import _default_document, _entities, _errors, client
from .plans import policy_path
from .targets import POLICY_VERSION, AwsTarget


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

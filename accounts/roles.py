"""The portal-wide duties, as Django groups, and the questions the rest of the code asks about them.

- Requester: anyone with an account.
- Dataset owner / steward: object permissions on the dataset (see governance.models.catalog).
- Security officer: approves the officer stage of Restricted data; reads everything.
- Governance admin: registers sources, edits classifications, catalog and roles.
- Auditor: reads everything, writes nothing.
- Privacy officer: creates, previews, approves (not their own) and executes data-subject requests.

Superuser status grants admin-site access but deliberately does *not* confer approval rights:
separation of duties must hold for platform admins too.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

SECURITY_OFFICERS = "Security officers"
GOVERNANCE_ADMINS = "Governance admins"
AUDITORS = "Auditors"
REQUESTERS = "Requesters"
PRIVACY_OFFICERS = "Privacy officers"

PORTAL_GROUPS = (SECURITY_OFFICERS, GOVERNANCE_ADMINS, AUDITORS, REQUESTERS, PRIVACY_OFFICERS)

_GOVERNED_MODELS = {
    "governance": [
        "classification",
        "datasource",
        "dataset",
        "column",
        "columntag",
        "role",
        "rolemembership",
        "accessrequest",
        "approval",
        "grant",
        # What operators look at when something is wrong: jobs (and overdue revocations), drift,
        # which target role stands for whom.
        "provisioningjob",
        "driftfinding",
        # Rotations of the portal's own credential on each source; a failed one is a finding.
        "credentialrotation",
        "sourceprincipal",
        "sourcehealth",
        # Long operations (catalog syncs, reconciles) and how far they got.
        "operation",
    ],
    "accounts": ["user", "team", "teammembership"],
    "audit": ["auditevent", "auditverification", "auditarchive"],
    # Row history of the governed tables (governance/models/history.py), Audit trail -> Events.
    "pghistory": ["events"],
    # The outbox and what it sent (Admin -> Notifications): the workbench's mail catcher; the teams'
    # Slack webhooks (their URLs never shown) and who linked which Slack account.
    "notifications": ["notification", "delivery", "slackwebhook", "slacklink"],
    # Which identity-provider group gives which role or duty, and the duties a sync gave.
    "identity": ["groupmapping", "managedgroupmembership"],
    # Access review campaigns and their items (reviews/, docs/reviews.md).
    "reviews": ["reviewcampaign", "reviewitem"],
    # Break-glass access (breakglass/, docs/break-glass.md): each classification's policy, the uses.
    "breakglass": ["breakglassuse", "breakglasspolicy"],
    # Data quality (quality/, docs/quality.md): checks, datasets' states, runs and their results.
    "quality": ["qualitycheck", "datasetquality", "qualityrun", "integritywatch", "integrityfinding"],
    # Data-subject requests (subjects/, docs/subjects.md): counts and states, never the identifiers.
    "subjects": ["subjectidentifier", "relationship", "datasethandling", "subjectrequest", "requestdataset"],
}

# Checks are defined by a dataset's owner and stewards (object rights, checked by the service) and by
# governance admins: every requester may open the forms; the service refuses whom it must.
_QUALITY_CHECK_EDIT = [
    ("quality", f"{verb}_{model}")
    for model in ("qualitycheck", "integritywatch")
    for verb in ("view", "add", "change", "delete")
] + [("quality", "view_integrityfinding")]


def on_call_group() -> str:
    """The Django group whose members may break the glass (breakglass/, docs/break-glass.md):
    BREAK_GLASS_GROUP, "on-call" unless set. An identity-provider group may map to it."""
    return str(getattr(settings, "BREAK_GLASS_GROUP", "") or "on-call")


def portal_duties() -> tuple[str, ...]:
    """The groups an identity-provider group may map to: the portal's duties and the on-call group."""
    return (*PORTAL_GROUPS, on_call_group())


def _all_view_perms() -> list[tuple[str, str]]:
    return [(app, f"view_{model}") for app, models in _GOVERNED_MODELS.items() for model in models]


# Model permissions of each group (admin-site access). Object-level rights come from guardian.
GROUP_PERMISSIONS: dict[str, list[tuple[str, str]]] = {
    AUDITORS: _all_view_perms(),
    SECURITY_OFFICERS: [
        *_all_view_perms(),
        ("governance", "change_accessrequest"),
        ("governance", "change_grant"),
        ("reviews", "add_reviewcampaign"),
        ("breakglass", "add_breakglasspolicy"),
        ("breakglass", "change_breakglasspolicy"),
    ],
    GOVERNANCE_ADMINS: _all_view_perms()
    + [
        ("governance", f"{verb}_{model}")
        for model in ("classification", "datasource", "dataset", "column", "columntag", "role", "rolemembership")
        for verb in ("add", "change")
    ]
    + [("governance", "change_accessrequest"), ("governance", "change_grant")]
    + [("accounts", f"{verb}_{model}") for model in ("user", "team", "teammembership") for verb in ("add", "change")]
    + [("identity", "add_groupmapping"), ("identity", "change_groupmapping")]
    + [("notifications", "add_slackwebhook"), ("notifications", "change_slackwebhook")]
    + [("reviews", "add_reviewcampaign")]
    + [("breakglass", "add_breakglasspolicy"), ("breakglass", "change_breakglasspolicy")]
    + _QUALITY_CHECK_EDIT,
    PRIVACY_OFFICERS: [
        *_all_view_perms(),
        ("subjects", "add_subjectrequest"),
        ("subjects", "change_subjectrequest"),
    ],
    REQUESTERS: [
        *_QUALITY_CHECK_EDIT,
        ("governance", "view_dataset"),
        ("governance", "view_column"),
        ("governance", "view_classification"),
        ("governance", "view_accessrequest"),
        ("governance", "add_accessrequest"),
        ("governance", "change_accessrequest"),
        ("governance", "view_grant"),
        ("governance", "view_approval"),
    ],
}


def ensure_portal_groups(sender: Any = None, **kwargs: Any) -> None:
    """Create the portal groups with their model permissions (idempotent; runs after migrate)."""
    from django.contrib.auth.models import Group, Permission

    using = kwargs.get("using", "default")
    for name, perms in GROUP_PERMISSIONS.items():
        group, _ = Group.objects.using(using).get_or_create(name=name)
        wanted = Permission.objects.using(using).filter(
            content_type__app_label__in={app for app, _ in perms}, codename__in={code for _, code in perms}
        )
        wanted_ids = {p.pk for p in wanted if (p.content_type.app_label, p.codename) in set(perms)}
        if wanted_ids and set(group.permissions.values_list("pk", flat=True)) != wanted_ids:
            group.permissions.set(wanted_ids)
    Group.objects.using(using).get_or_create(name=on_call_group())  # a duty without admin-site rights


def _in_group(user: Any, name: str) -> bool:
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    cache = getattr(user, "_portal_groups_cache", None)
    if cache is None:
        cache = set(user.groups.values_list("name", flat=True))
        user._portal_groups_cache = cache
    return name in cache


def is_security_officer(user: Any) -> bool:
    return _in_group(user, SECURITY_OFFICERS)


def is_on_call(user: Any) -> bool:
    return _in_group(user, on_call_group())


def is_governance_admin(user: Any) -> bool:
    return _in_group(user, GOVERNANCE_ADMINS)


def is_auditor(user: Any) -> bool:
    return _in_group(user, AUDITORS)


def is_privacy_officer(user: Any) -> bool:
    return _in_group(user, PRIVACY_OFFICERS)


def _superuser(user: Any) -> bool:
    return bool(getattr(user, "is_superuser", False)) and bool(getattr(user, "is_active", False))


def operates_provisioning(user: Any) -> bool:
    """May act on provisioning when it goes wrong (queue a failed job again): governance admins and
    security officers. Auditors see the same pages and act on nothing."""
    return _superuser(user) or is_governance_admin(user) or is_security_officer(user)


def administers_sources(user: Any) -> bool:
    """May register, sync and reconcile data sources (repairs included): governance admins."""
    return _superuser(user) or is_governance_admin(user)


def sees_everything(user: Any) -> bool:
    """Officers, governance admins and auditors read the whole catalog, every request and grant."""
    return bool(getattr(user, "is_superuser", False)) or any(
        _in_group(user, g) for g in (SECURITY_OFFICERS, GOVERNANCE_ADMINS, AUDITORS)
    )

"""Approval policy: what the classification (and the shape of the request) demands.

Policy is data: each Classification row carries its stages, maximum duration and rules. When several
rules apply to one request (the classification, the level asked for, PII columns, a role as
grantee), the strictest wins; that combination happens here and nowhere else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db.models import Q
from guardian.shortcuts import get_group_perms, get_user_perms

from accounts import mfa
from accounts.roles import is_governance_admin, is_security_officer

from . import durations
from .errors import InvalidInput, NotPermitted, PolicyViolation
from .models import (
    STAGE_ORDER,
    AccessLevel,
    ApprovalStage,
    Classification,
    Column,
    Dataset,
    SensitiveTag,
)

if TYPE_CHECKING:
    from .models import AccessRequest

# Confirming a tag on a column lifts its dataset at least to this classification (by slug).
MINIMUM_CLASSIFICATION_FOR_TAG: dict[str, str] = {tag.value: "confidential" for tag in SensitiveTag}
MINIMUM_CLASSIFICATION_FOR_TAG[SensitiveTag.PHI.value] = "restricted"


@dataclass(frozen=True)
class EffectivePolicy:
    """The rules that apply to one request, after combining every source of rules."""

    classification: str
    stages: tuple[str, ...]
    min_duration_seconds: int
    max_duration_seconds: int
    justification_required: bool
    auto_approve: bool
    pii_requires_explicit_request: bool
    allow_pii_access: bool
    # Human-readable reasons for every rule stricter than the classification's own.
    notes: tuple[str, ...] = field(default=())
    # Per PII column the request covers: the treatments allowed, the default, the one chosen and the
    # stage each needs (see resolve_treatments); empty for a request without PII columns.
    treatments: tuple[dict[str, Any], ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        """The snapshot kept on the request: the bounds in seconds and in words, and in days for
        readers of snapshots taken before durations had hours."""
        data = asdict(self)
        data["stages"] = list(self.stages)
        data["notes"] = list(self.notes)
        data["treatments"] = [dict(t) for t in self.treatments]
        data["min_duration"] = durations.words(self.min_duration)
        data["max_duration"] = durations.words(self.max_duration)
        data["max_duration_days"] = round(self.max_duration_seconds / 86400, 4)
        return data

    @property
    def min_duration(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.min_duration_seconds)

    @property
    def max_duration(self) -> dt.timedelta:
        return dt.timedelta(seconds=self.max_duration_seconds)


def classification_policy(classification: Classification) -> EffectivePolicy:
    stages = tuple(s for s in STAGE_ORDER if s in classification.approval_stages)
    if not stages and not classification.auto_approve:
        # Someone must be able to decide: no stages and no auto-approval means the owner decides.
        stages = (ApprovalStage.OWNER.value,)
    return EffectivePolicy(
        classification=classification.name,
        stages=stages,
        min_duration_seconds=int(classification.min_duration.total_seconds()),
        max_duration_seconds=int(classification.max_duration.total_seconds()),
        justification_required=classification.justification_required,
        auto_approve=classification.auto_approve and not classification.approval_stages,
        pii_requires_explicit_request=classification.pii_requires_explicit_request,
        allow_pii_access=classification.allow_pii_access,
    )


def _stricter(
    policy: EffectivePolicy, *, note: str, owner_stage: bool = True, justification: bool = True
) -> EffectivePolicy:
    stages = set(policy.stages)
    if owner_stage:
        stages.add(ApprovalStage.OWNER.value)
    return EffectivePolicy(
        classification=policy.classification,
        stages=tuple(s for s in STAGE_ORDER if s in stages),
        min_duration_seconds=policy.min_duration_seconds,
        max_duration_seconds=policy.max_duration_seconds,
        justification_required=policy.justification_required or justification,
        auto_approve=False,
        pii_requires_explicit_request=policy.pii_requires_explicit_request,
        allow_pii_access=policy.allow_pii_access,
        notes=(*policy.notes, note),
    )


def effective_policy(
    *, dataset: Dataset, level: str, includes_pii: bool, grantee_is_role: bool = False
) -> EffectivePolicy:
    """The strictest combination of every rule that applies to this request."""
    policy = classification_policy(dataset.classification)
    if level not in (AccessLevel.READ, AccessLevel.AGGREGATE):
        policy = _stricter(
            policy, note=f"{AccessLevel(level).label} access always needs the owner's approval and a reason."
        )
    if includes_pii:
        policy = _stricter(policy, note="PII columns always need the owner's approval and a reason.")
    if grantee_is_role:
        policy = _stricter(
            policy, note="Access for a role reaches every member: it needs the owner's approval.", justification=False
        )
    return policy


# --- aggregate access (differentially private aggregates, privacy/ and docs/privacy.md) --------------


def check_aggregate_level(
    *, dataset: Dataset, level: str, columns: Iterable[Column] = (), grantee_is_role: bool, jit_credentials: bool
) -> None:
    """An aggregates-only dataset may be asked for `aggregate` access and nothing else; `aggregate`
    needs such a dataset (its bounds are declared there), a user (the budget is one person's) and
    no columns or database login (nothing is provisioned)."""
    aggregate = level == AccessLevel.AGGREGATE
    if dataset.aggregates_only and not aggregate:
        raise PolicyViolation(
            f"{dataset.qualified_name} allows differentially private aggregates only: request the aggregate level.",
            field="level",
        )
    if not aggregate:
        return
    if not dataset.aggregates_only:
        raise PolicyViolation(
            f"{dataset.qualified_name} is not marked aggregates only; aggregate access needs its owner's bounds.",
            field="level",
        )
    if grantee_is_role:
        raise InvalidInput("Aggregate access is for one user: its privacy budget is a person's.", field="grantee_role")
    if list(columns):
        raise InvalidInput("Aggregate access covers the declared columns; name none.", field="columns")
    if jit_credentials:
        raise InvalidInput("Aggregate access has no database login: nothing is provisioned.", field="jit_credentials")


def parse_epsilon(raw: str) -> Decimal | None:
    """The budget as an approver typed it in a form (empty: none, so the default applies)."""
    raw = (raw or "").strip()
    if not raw:
        return None
    try:
        return Decimal(raw)
    except InvalidOperation:
        raise InvalidInput(f"{raw!r} is not a number: the privacy budget (epsilon).", field="epsilon") from None


def check_epsilon(epsilon: Decimal | None) -> Decimal:
    """The budget an approver sets on an aggregate grant: above zero, at most PRIVACY_MAX_EPSILON;
    none means PRIVACY_DEFAULT_EPSILON."""
    if epsilon is None:
        return Decimal(str(settings.PRIVACY_DEFAULT_EPSILON))
    # Never above what the grant's column holds (governance.models.requests.epsilon_field).
    highest = min(Decimal(str(settings.PRIVACY_MAX_EPSILON)), Decimal("9999.9999"))
    if not epsilon.is_finite() or epsilon <= 0 or epsilon > highest:
        raise InvalidInput(f"The privacy budget (epsilon) must be above 0 and at most {highest}.", field="epsilon")
    return epsilon


# --- which columns hold sensitive data (one definition, in Python and in SQL) ----------------------
#
# A column holds sensitive data when it carries a confirmed tag of its own (ColumnTag) or inherits one
# through lineage: a column of a view computing from a tagged column (Column.inherited_tags,
# maintained by governance.services.lineage).


def column_pii_tags(column: Column) -> list[str]:
    """The column's own confirmed tags and its inherited ones (uses a `confirmed_tags` prefetch
    when there is one, else `tags` prefetched or loaded)."""
    from .models import TagStatus

    confirmed = getattr(column, "confirmed_tags", None)
    own = (
        {t.tag for t in confirmed}
        if confirmed is not None
        else {t.tag for t in column.tags.all() if t.status == TagStatus.CONFIRMED}
    )
    return sorted(own | set(column.inherited_tags or ()))


def pii_column_names(columns: Iterable[Column]) -> set[str]:
    """Names of the columns that hold sensitive data, own or inherited (see column_pii_tags)."""
    return {c.name for c in columns if column_pii_tags(c)}


def pii_q(prefix: str = "") -> Q:
    """A filter for columns holding sensitive data; `prefix` reaches them through a relation
    ("columns__" from datasets)."""
    from .models import TagStatus

    return Q(**{f"{prefix}tags__status": TagStatus.CONFIRMED}) | Q(**{f"{prefix}inherited_tags__len__gt": 0})


def pii_tag_q(tag: str, prefix: str = "") -> Q:
    """A filter for columns carrying `tag`, confirmed or inherited."""
    from .models import TagStatus

    return Q(**{f"{prefix}tags__tag": tag, f"{prefix}tags__status": TagStatus.CONFIRMED}) | Q(
        **{f"{prefix}inherited_tags__contains": [tag]}
    )


@dataclass(frozen=True)
class ColumnScope:
    covered: list[str]  # empty = whole table
    pii_included: list[str]
    pii_excluded: list[str]


def resolve_columns(
    *, dataset: Dataset, requested: Iterable[Column], level: str, policy_source: Classification
) -> ColumnScope:
    """Which columns a request covers.

    Named columns are kept as a column list (admin access excepted: it is table-wide). A request
    that names none covers the whole table, except where the classification says PII needs naming:
    then it covers today's non-PII columns, as a list, so columns added later are not covered
    silently. PII among named columns must be allowed at all.
    """
    all_columns = list(dataset.columns.filter(is_present=True).prefetch_related("tags"))
    by_id = {c.pk: c for c in all_columns}
    requested = list(requested)
    unknown = [c for c in requested if c.pk not in by_id]
    if unknown:
        raise InvalidInput(f"Column {unknown[0].name!r} is not a column of {dataset.qualified_name}.", field="columns")
    pii = pii_column_names(all_columns)
    if requested:
        names = sorted({c.name for c in requested}, key=lambda n: next(c.ordinal for c in all_columns if c.name == n))
        pii_included = [n for n in names if n in pii]
        if pii_included and not policy_source.allow_pii_access:
            raise PolicyViolation(
                f"{policy_source.name} data does not allow access to PII columns ({', '.join(pii_included)}).",
                field="columns",
            )
        if level == AccessLevel.ADMIN:
            if len(names) != len(all_columns):
                raise PolicyViolation(
                    "Admin access covers the whole table: name every column or none.", field="columns"
                )
            return ColumnScope(covered=[], pii_included=pii_included, pii_excluded=[])
        # Named columns stay a column list even when they are all of them today: a column added
        # later must not be covered by a grant nobody reviewed it for.
        return ColumnScope(covered=names, pii_included=pii_included, pii_excluded=sorted(pii - set(names)))
    explicit = policy_source.pii_requires_explicit_request or not policy_source.allow_pii_access
    if explicit and level != AccessLevel.ADMIN:
        # Where PII needs naming, a whole-table ask becomes the list of today's non-PII columns, so
        # that columns added (and tagged) later are not covered silently.
        rest = [c.name for c in all_columns if c.name not in pii]
        if not rest:
            raise PolicyViolation(
                "Every column of this table holds PII: name the columns you need explicitly.", field="columns"
            )
        return ColumnScope(covered=rest, pii_included=[], pii_excluded=sorted(pii))
    if explicit and pii:  # admin access cannot be narrowed to columns
        raise PolicyViolation(
            "Admin access covers the whole table, and this table has PII columns: "
            f"name every column explicitly, PII included ({', '.join(sorted(pii))}).",
            field="columns",
        )
    return ColumnScope(covered=[], pii_included=sorted(pii), pii_excluded=[])


def resolve_duration(*, policy: EffectivePolicy, duration: dt.timedelta | None, longest_allowed: bool) -> dt.timedelta:
    """The duration to record, or a PolicyViolation that says what the limits are, in words."""
    if longest_allowed and (duration is None or duration > policy.max_duration):
        return policy.max_duration
    if duration is None:
        raise InvalidInput("Say how long you need access for, or ask for the longest allowed.", field="duration")
    if duration <= dt.timedelta(0):
        raise InvalidInput("The duration must be positive.", field="duration")
    shortest = max(policy.min_duration, durations.floor())
    if duration < shortest:
        raise PolicyViolation(
            f"{policy.classification} data is granted for at least {durations.words(shortest)}; "
            f"you asked for {durations.words(duration)}. Ask for {durations.words(shortest)} or more.",
            field="duration",
        )
    if duration > policy.max_duration:
        longest = durations.words(policy.max_duration)
        raise PolicyViolation(
            f"{policy.classification} data allows at most {longest} of access; "
            f"you asked for {durations.words(duration)}. Ask for {longest} or less, "
            "or choose the longest allowed.",
            field="duration",
        )
    return duration


def check_justification(*, policy: EffectivePolicy, justification: str) -> None:
    if policy.justification_required and not justification.strip():
        why = f" ({policy.notes[-1]})" if policy.notes else ""
        raise PolicyViolation(
            f"{policy.classification} data requires a justification: say why you need this access{why}.",
            field="justification",
        )


def holds_dataset_perm(user: Any, dataset: Dataset, codename: str) -> bool:
    """An explicitly assigned object permission (user or group). Superuser status does not count."""
    if user is None or not user.is_active:
        return False
    return codename in get_user_perms(user, dataset) or codename in get_group_perms(user, dataset)


def decides_tags_everywhere(user: Any) -> bool:
    """Security officers and governance admins (and superusers) decide PII tags on every dataset."""
    if user is None or not getattr(user, "is_active", False):
        return False
    return bool(getattr(user, "is_superuser", False)) or is_security_officer(user) or is_governance_admin(user)


def may_decide_tags(user: Any, dataset: Dataset) -> bool:
    """Whether `user` may confirm or reject PII tags on `dataset`: its owners and stewards, and those
    who decide everywhere. The one rule the services enforce and the pages show."""
    return decides_tags_everywhere(user) or holds_dataset_perm(user, dataset, "steward_dataset")


def benefits_from_role(user: Any, role_id: int) -> bool:
    """Whether access granted to the role would reach `user` (member now, or owner of the role)."""
    from .models import Role, RoleMembership

    return (
        RoleMembership.objects.active().filter(role_id=role_id, user=user).exists()
        or Role.objects.filter(pk=role_id, owner=user).exists()
    )


def separation_refusal(
    *, user: Any, requester_id: int | None, grantee_user_id: int | None, grantee_role_id: int | None
) -> str | None:
    """Why `user` may not decide access that they asked for or that would reach them, or None."""
    if user is None or not user.is_active:
        return "Only an active user can decide access."
    if requester_id is not None and user.pk == requester_id:
        return "You cannot approve or deny your own request (separation of duties)."
    if grantee_user_id is not None and user.pk == grantee_user_id:
        return "You cannot approve or deny access granted to yourself (separation of duties)."
    if grantee_role_id is not None and benefits_from_role(user, grantee_role_id):
        return (
            "You own or belong to the role this access is for, so it would reach you: "
            "another person must decide (separation of duties)."
        )
    return None


def stage_refusal(*, user: Any, dataset: Dataset, stage: str) -> str | None:
    """Why `user` may not decide `stage` for access to `dataset` (who decides which stage), or None."""
    if stage == ApprovalStage.OWNER:
        if not holds_dataset_perm(user, dataset, "approve_access"):
            return f"You are not an owner or steward of {dataset.qualified_name}, so you cannot decide its owner stage."
        return None
    if stage == ApprovalStage.SECURITY_OFFICER:
        if not is_security_officer(user):
            return "Only a security officer can decide the security officer stage."
        return None
    return f"Unknown approval stage {stage!r}."


def approver_refusal(*, user: Any, access_request: AccessRequest, stage: str) -> str | None:
    """Why `user` may not decide `stage` of this request, or None when they may.

    Separation of duties: nobody decides a request they made or that grants them access, and one
    person never decides two stages of the same request.
    """
    refusal = separation_refusal(
        user=user,
        requester_id=access_request.requester_id,
        grantee_user_id=access_request.grantee_user_id,
        grantee_role_id=access_request.grantee_role_id,
    )
    if refusal:
        return refusal
    earlier = [a for a in access_request.approvals.all() if a.approver_id == user.pk and a.stage != stage]
    if earlier:
        return (
            f"You already decided the {ApprovalStage(earlier[0].stage).label.lower()} stage of this request; "
            "another person must decide this one (separation of duties)."
        )
    return stage_refusal(user=user, dataset=access_request.dataset, stage=stage)


def ensure_may_decide(*, user: Any, access_request: AccessRequest, stage: str) -> None:
    refusal = approver_refusal(user=user, access_request=access_request, stage=stage)
    if refusal:
        raise NotPermitted(refusal)


# --- deciding from a chat message (Slack's Approve / Deny buttons) ---------------------------------

RESTRICTED_SLUG = "restricted"
CHAT_MAX_DURATION = dt.timedelta(days=7)


def chat_decision_refusal(*, access_request: AccessRequest) -> str | None:
    """Why this request may not be decided from a chat message, or None when it is low risk: not
    Restricted, no PII columns, read access, at most 7 days, and no step-up MFA needed to decide it
    (a chat press cannot prove a second factor). The one rule: the Slack message asks it to offer
    the buttons, the press asks it again against the request and the dataset as they are now."""
    classification = access_request.dataset.classification
    snapshot = access_request.policy or {}
    if classification.slug == RESTRICTED_SLUG or snapshot.get("classification") == "Restricted":
        return "Restricted data is decided in the portal."
    if snapshot.get("pii_included") or _covers_pii_now(access_request):
        return "Access that includes PII columns is decided in the portal."
    if access_request.level != AccessLevel.READ:
        return f"{AccessLevel(access_request.level).label} access is decided in the portal."
    if access_request.duration > CHAT_MAX_DURATION:
        return f"Access for longer than {durations.words(CHAT_MAX_DURATION)} is decided in the portal."
    if mfa.step_up_required(classification.rank):
        return f"{classification.name} data needs a sign-in with your authenticator: decide it in the portal."
    return None


def _covers_pii_now(access_request: AccessRequest) -> bool:
    """Whether the columns the request covers (all of them for a whole-table request) hold PII today."""
    columns = access_request.dataset.columns.filter(is_present=True).prefetch_related("tags")
    if access_request.covered_columns:
        columns = columns.filter(name__in=access_request.covered_columns)
    return bool(pii_column_names(columns))

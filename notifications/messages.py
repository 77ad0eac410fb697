"""What each kind of notification says and to whom: one function per kind turns a notification's
context (ids) into messages, from the rows as they are now. Texts are templates in
templates/notifications/<kind>.txt and .html; the subject and the one link of each message are
made here. A notification whose subject is gone or moved on (a request decided before its
"waits for you" was prepared) reaches nobody and says why (`Notification.note`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.urls import reverse

from governance import durations
from governance.models import (
    AccessRequest,
    ApprovalStage,
    CredentialRotation,
    Dataset,
    DataSource,
    DriftFinding,
    Grant,
    ProvisioningJob,
    RequestState,
)
from governance.selectors.requests import access_request_deciders
from reviews.selectors import review_notice_subject

from .models import Kind, Notification
from .selectors import governance_admins, people_of_grant, privacy_officers, security_officers


@dataclass
class Message:
    recipient: Any
    subject: str
    link: str
    context: dict[str, Any] = field(default_factory=dict)


Plan = tuple[list[Message], str]


def absolute(path: str) -> str:
    """A link into the portal for an email (PORTAL_URL: the address people reach it at)."""
    return settings.PORTAL_URL.rstrip("/") + path


def _grants(ids: list[int]) -> list[Grant]:
    return list(
        Grant.objects.filter(pk__in=ids)
        .select_related(
            "dataset__source",
            "dataset__classification",
            "grantee_user",
            "grantee_role__owner",
            "source_request__requester",
        )
        .order_by("pk")
    )


def _request(pk: int) -> AccessRequest | None:
    return (
        AccessRequest.objects.select_related(
            "dataset__source", "dataset__classification", "requester", "grantee_user", "grantee_role"
        )
        .filter(pk=pk)
        .first()
    )


def request_waiting(n: Notification) -> Plan:
    req = _request(n.context["request"])
    stage = n.context["stage"]
    if req is None or req.state != RequestState.PENDING or req.current_stage != stage:
        return [], "The request was decided or moved on before this was sent."
    link = absolute(reverse("portal:request_detail", args=[req.pk]))
    stage_label = ApprovalStage(stage).label
    subject = f"Request #{req.pk} waits for your decision: {req.level} access to {req.dataset.qualified_name}"
    ctx = {
        "request": req,
        "stage_label": stage_label,
        "duration": durations.words(req.duration),
        "inbox": absolute(reverse("portal:inbox")),
    }
    return [Message(p, subject, link, ctx) for p in access_request_deciders(req)], "Nobody may decide this stage."


def request_decided(n: Notification) -> Plan:
    req = _request(n.context["request"])
    if req is None:
        return [], "The request no longer exists."
    decision = n.context["decision"]
    people = {p.pk: p for p in (req.requester, req.grantee_user) if p is not None and p.is_active}
    subject = f"Your request #{req.pk} was {decision}: {req.level} access to {req.dataset.qualified_name}"
    link = absolute(reverse("portal:request_detail", args=[req.pk]))
    ctx = {"request": req, "decision": decision, "comment": n.context.get("comment", "")}
    return [Message(p, subject, link, ctx) for p in people.values()], "Nobody to tell."


def access_active(n: Notification) -> Plan:
    """One message per person, listing every grant of theirs that became active (a batch activates many)."""
    by_person: dict[int, tuple[Any, list[Grant]]] = {}
    for grant in _grants(n.context["grants"]):
        if not grant.is_in_force():
            continue
        for person in people_of_grant(grant):
            by_person.setdefault(person.pk, (person, []))[1].append(grant)
    link = absolute(reverse("portal:grants"))
    messages = []
    for person, grants in by_person.values():
        what = grants[0].dataset.qualified_name if len(grants) == 1 else f"{len(grants)} datasets"
        messages.append(Message(person, f"Your access to {what} is active", link, {"grants": grants}))
    return messages, "The access ended before this was sent."


def provisioning_failed(n: Notification) -> Plan:
    job = ProvisioningJob.objects.filter(pk=n.context["job"]).first()
    grants = _grants([n.context["grant"]]) if n.context.get("grant") else []
    grant = grants[0] if grants else None
    what = (
        f"{n.context.get('action', 'job')} of grant #{grant.pk} on {grant.dataset.qualified_name}" if grant else "a job"
    )
    people = {p.pk: p for p in people_of_grant(grant)} if grant else {}
    people |= {p.pk: p for p in governance_admins()}
    link = absolute(reverse("admin:governance_provisioningjob_change", args=[n.context["job"]]))
    ctx = {"job": job, "grant": grant, "error": n.context.get("error", ""), "what": what}
    return [Message(p, f"Provisioning failed: {what}", link, ctx) for p in people.values()], "Nobody to tell."


def access_ending(n: Notification) -> Plan:
    grants = _grants([n.context["grant"]])
    if not grants or not grants[0].is_in_force():
        return [], "The access ended before this was sent."
    grant, days = grants[0], n.context["days"]
    when = "tomorrow" if days == 1 else f"in {days} days"
    messages = []
    for person in people_of_grant(grant):
        if grant.grantee_user_id == person.pk:  # the renewal form starts from the grant (portal)
            link = absolute(reverse("portal:request", args=[grant.dataset_id]) + f"?renew={grant.pk}")
        elif grant.source_request_id:
            link = absolute(reverse("portal:request_detail", args=[grant.source_request_id]))
        else:
            link = absolute(reverse("portal:grants"))
        subject = f"Your access to {grant.dataset.qualified_name} ends {when}"
        messages.append(Message(person, subject, link, {"grant": grant, "when": when}))
    return messages, "Nobody to tell."


def drift_found(n: Notification) -> Plan:
    source = DataSource.objects.select_related("owner").filter(pk=n.context["source"]).first()
    if source is None or source.owner is None or not source.owner.is_active:
        return [], "The source has no owner to tell."
    findings = list(DriftFinding.objects.filter(pk__in=n.context["findings"][:20]).order_by("pk"))
    count = len(n.context["findings"])
    link = absolute(reverse("admin:governance_driftfinding_changelist") + f"?source={source.pk}&state=open")
    subject = f"Drift found on {source.name}: {count} finding{'s' if count != 1 else ''}"
    ctx = {"source": source, "findings": findings, "count": count, "more": count - len(findings)}
    return [Message(source.owner, subject, link, ctx)], ""


def quality_failing(n: Notification) -> Plan:
    """To the dataset's owner: which checks turned red in which run (names only, never a value)."""
    dataset = Dataset.objects.select_related("owner", "source").filter(pk=n.context["dataset"]).first()
    if dataset is None or dataset.owner is None or not dataset.owner.is_active:
        return [], "The dataset has no owner to tell."
    checks = list(n.context.get("checks", []))
    link = absolute(reverse("portal:dataset", args=[dataset.pk]) + "#quality")
    subject = f"Quality checks failing on {dataset.qualified_name}: {', '.join(checks[:3])}" + (
        f" and {len(checks) - 3} more" if len(checks) > 3 else ""
    )
    return [Message(dataset.owner, subject, link, {"dataset": dataset, "checks": checks})], ""


def integrity_changed(n: Notification) -> Plan:
    """To the dataset's owner: what changed (counts and checksums, never a value)."""
    dataset = Dataset.objects.select_related("owner", "source").filter(pk=n.context["dataset"]).first()
    if dataset is None or dataset.owner is None or not dataset.owner.is_active:
        return [], "The dataset has no owner to tell."
    link = absolute(reverse("portal:dataset", args=[dataset.pk]) + "#quality")
    detail = str(n.context.get("detail", ""))
    subject = f"Integrity: {dataset.qualified_name} changed"
    return [Message(dataset.owner, subject, link, {"dataset": dataset, "detail": detail})], ""


def revocation_overdue(n: Notification) -> Plan:
    grants = _grants([n.context["grant"]]) if n.context.get("grant") else []
    grant = grants[0] if grants else None
    link = absolute(reverse("admin:governance_provisioningjob_changelist") + "?overdue=revocations")
    what = f"grant #{grant.pk} on {grant.dataset.qualified_name}" if grant else f"job #{n.context['job']}"
    ctx = {"grant": grant, "job_id": n.context["job"], "error": n.context.get("error", ""), "what": what}
    return [Message(p, f"Revocation overdue: {what}", link, ctx) for p in governance_admins()], "No admin to tell."


def rotation_failed(n: Notification) -> Plan:
    """To the governance admins (who hold the source's credentials) and the source's owner."""
    rotation = CredentialRotation.objects.select_related("source__owner").filter(pk=n.context["rotation"]).first()
    if rotation is None:
        return [], "The rotation is gone."
    source = rotation.source
    link = absolute(reverse("admin:governance_credentialrotation_changelist") + f"?source={source.pk}&state=open")
    subject = f"Credential rotation failed on {source.name}"
    people = list(governance_admins())
    if source.owner is not None and source.owner.is_active and source.owner not in people:
        people.append(source.owner)
    ctx = {"source": source, "rotation": rotation, "error": rotation.error}
    return [Message(p, subject, link, ctx) for p in people], "No admin or owner to tell."


def _review(n: Notification, template: str) -> Plan:
    """The review notices: one message to the reviewer, counting what still waits for them."""
    found = review_notice_subject(campaign_id=n.context["campaign"], reviewer_id=n.context["reviewer"])
    if found is None:
        return [], "Nothing waits for this reviewer any more."
    campaign, reviewer, pending = found
    link = absolute(reverse("reviews:inbox"))
    plural = pending != 1
    subject = template.format(
        count=pending, s="s" if plural else "", verb="wait" if plural else "waits", name=campaign.name
    )
    ctx = {"campaign": campaign, "pending": pending, "escalated": n.context.get("escalated", False)}
    return [Message(reviewer, subject, link, ctx)], ""


def review_assigned(n: Notification) -> Plan:
    return _review(n, "{count} access item{s} {verb} for your review: {name}")


def review_due(n: Notification) -> Plan:
    return _review(n, "Review deadline near: {count} item{s} of {name} still undecided")


def review_overdue(n: Notification) -> Plan:
    return _review(n, "Review overdue: {count} item{s} of {name} still undecided")


def _break_glass(n: Notification, subject: str) -> Plan:
    """To every security officer: who broke the glass on what, why, until when, and the review."""
    grants = _grants([n.context["grant"]])
    if not grants:
        return [], "The grant is gone."
    grant = grants[0]
    link = absolute(reverse("breakglass:use", args=[n.context["use"]]))
    ctx = {
        "grant": grant,
        "person": n.context.get("person", ""),
        "reason": n.context.get("reason", ""),
        "duration": n.context.get("duration", ""),
        "review_due_at": n.context.get("review_due_at", ""),
        "assigned_officer": n.context.get("assigned_officer", ""),
    }
    subject = subject.format(person=ctx["person"], dataset=grant.dataset.qualified_name)
    return [Message(p, subject, link, ctx) for p in security_officers()], "No security officer to tell."


def break_glass_activated(n: Notification) -> Plan:
    return _break_glass(n, "BREAK-GLASS: {person} opened {dataset}")


def break_glass_review_overdue(n: Notification) -> Plan:
    return _break_glass(n, "Break-glass review overdue: {person} on {dataset}")


def _subject_request(n: Notification, subject: str) -> Plan:
    """To every privacy officer: which request (its number and kind, never who the subject is) is
    due when. The context is all there is: notifications never read the subjects app (it builds on
    this one), and the subject's identifiers are in no notification."""
    number = n.context["request"]
    link = absolute(reverse("subjects:request", args=[number]))  # the portal page: the officers act there
    ctx = {"number": number, "kind": n.context.get("request_kind", ""), "due_at": n.context.get("due_at", "")}
    subject = subject.format(number=number, kind=ctx["kind"])
    return [Message(p, subject, link, ctx) for p in privacy_officers()], "No privacy officer to tell."


def subject_request_due(n: Notification) -> Plan:
    return _subject_request(n, "Data-subject request #{number} ({kind}) is due within 7 days")


def subject_request_overdue(n: Notification) -> Plan:
    return _subject_request(n, "Data-subject request #{number} ({kind}) is OVERDUE")


PLANS: dict[str, Callable[[Notification], Plan]] = {
    Kind.REQUEST_WAITING: request_waiting,
    Kind.REQUEST_DECIDED: request_decided,
    Kind.ACCESS_ACTIVE: access_active,
    Kind.PROVISIONING_FAILED: provisioning_failed,
    Kind.ACCESS_ENDING: access_ending,
    Kind.DRIFT_FOUND: drift_found,
    Kind.REVOCATION_OVERDUE: revocation_overdue,
    Kind.ROTATION_FAILED: rotation_failed,
    Kind.QUALITY_FAILING: quality_failing,
    Kind.INTEGRITY_CHANGED: integrity_changed,
    Kind.REVIEW_ASSIGNED: review_assigned,
    Kind.REVIEW_DUE: review_due,
    Kind.REVIEW_OVERDUE: review_overdue,
    Kind.BREAK_GLASS_ACTIVATED: break_glass_activated,
    Kind.BREAK_GLASS_REVIEW_OVERDUE: break_glass_review_overdue,
    Kind.SUBJECT_REQUEST_DUE: subject_request_due,
    Kind.SUBJECT_REQUEST_OVERDUE: subject_request_overdue,
}

# What may wait for the daily digest of someone who chose it. Failures, the last day of an access
# and overdue revocations are sent at once whatever the preference.
DIGESTIBLE = frozenset(
    {Kind.REQUEST_WAITING, Kind.REQUEST_DECIDED, Kind.ACCESS_ACTIVE, Kind.ACCESS_ENDING, Kind.DRIFT_FOUND}
)


def digestible(kind: str, context: dict[str, Any]) -> bool:
    return kind in DIGESTIBLE and not (kind == Kind.ACCESS_ENDING and context.get("days") == 1)

"""A data-subject request's life: create, preview, approve, extend, execute (docs/subjects.md).

draft -> previewed -> approved -> executing -> done | failed | needs_attention; a request that
failed or needs attention is previewed (and approved) again before it runs again.

The subject's identifiers are personal data: stored only encrypted (governance.crypto, the key of the
sources' passwords), decrypted in the process that previews or executes, never put in an audit event,
an error message or a log line. Audit events hold datasets, actions and row counts.

Reading and changing the sources happens outside any portal transaction (house rule: network I/O
never holds the portal's locks); what it found is recorded afterwards, each dataset's outcome with
its audit event in one transaction.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import constant_time_compare, salted_hmac

from audit import services as audit
from governance import crypto
from governance.catalog.introspect import connection_params
from governance.errors import ConflictError, InvalidInput, NotPermitted
from governance.secrets import SecretUnavailable
from governance.services.common import refusal_recorded

from ..engine import target
from ..models import (
    DatasetOutcome,
    HandlingAction,
    IdentifierKind,
    RequestAction,
    RequestDataset,
    RequestKind,
    RequestState,
    SubjectRequest,
)
from ..permissions import handles_subject_requests
from .plan import SourcePlan, source_plans

MAX_VALUE = 320
EXECUTABLE = (RequestKind.ERASURE, RequestKind.ACCESS, RequestKind.RECTIFICATION, RequestKind.RESTRICTION)
# Kinds whose execution checks that the request is still what was approved (the digest).
DIGEST_CHECKED = (RequestKind.RECTIFICATION, RequestKind.RESTRICTION)
PREVIEWABLE = (RequestState.DRAFT, RequestState.PREVIEWED, RequestState.FAILED, RequestState.NEEDS_ATTENTION)


def _ensure_officer(actor: Any) -> None:
    if not handles_subject_requests(actor):
        raise NotPermitted("Only privacy officers handle data-subject requests.")


def _lock(request: SubjectRequest) -> SubjectRequest:
    return SubjectRequest.objects.select_for_update().get(pk=request.pk)


def identifiers_of(request: SubjectRequest) -> dict[str, str]:
    """The subject's identifiers, decrypted (for the engine only: never shown, stored or logged)."""
    return dict(json.loads(crypto.decrypt(request.identifiers_encrypted)))


def _clean_identifiers(identifiers: Any) -> dict[str, str]:
    if not isinstance(identifiers, dict) or not identifiers:
        raise InvalidInput("Give at least one identifier of the subject (kind: value).", field="identifiers")
    clean: dict[str, str] = {}
    for kind, value in identifiers.items():
        if kind not in IdentifierKind.values:
            raise InvalidInput(
                f"Unknown identifier kind {str(kind)[:40]!r}: use {', '.join(IdentifierKind.values)}.",
                field="identifiers",
            )
        if not isinstance(value, str) or not value.strip():
            raise InvalidInput(f"The {kind} identifier is empty.", field="identifiers")
        if len(value) > MAX_VALUE:
            raise InvalidInput(f"The {kind} identifier is longer than {MAX_VALUE} characters.", field="identifiers")
        clean[kind] = value.strip()
    return clean


def subject_request_create(*, actor: Any, kind: str, identifiers: Any, reference: str = "") -> SubjectRequest:
    """A privacy officer records a subject's request; it is due SUBJECTS_DEADLINE_DAYS from now."""
    with refusal_recorded(action="subject_request.create", actor=actor, metadata={"kind": str(kind)[:20]}):
        _ensure_officer(actor)
        if kind not in RequestKind.values:
            raise InvalidInput(f"Choose one of {', '.join(RequestKind.values)}.", field="kind")
        clean = _clean_identifiers(identifiers)
        if len(reference) > 100:
            raise InvalidInput("The reference is longer than 100 characters.", field="reference")
        now = timezone.now()
        with transaction.atomic():
            request = SubjectRequest.objects.create(
                kind=kind,
                identifiers_encrypted=crypto.encrypt(json.dumps(clean, sort_keys=True)),
                identifier_kinds=sorted(clean),
                reference=reference,
                created_by=actor,
                created_at=now,
                due_at=now + dt.timedelta(days=settings.SUBJECTS_DEADLINE_DAYS),
            )
            audit.record(
                action="subject_request.created",
                actor=actor,
                target=request,
                metadata={"kind": kind, "identifier_kinds": sorted(clean), "due_at": request.due_at.isoformat()},
            )
    return request


def _params(plan: SourcePlan) -> dict[str, Any]:
    try:
        return connection_params(plan.source)
    except SecretUnavailable as exc:
        raise target.TargetError(str(exc)) from None


def subject_request_preview(*, actor: Any, request: SubjectRequest) -> SubjectRequest:
    """Count, per dataset, the subject's rows and say how they match (read-only, one snapshot per
    source). Replaces an earlier preview and withdraws its approval."""
    with refusal_recorded(action="subject_request.preview", actor=actor, target=request):
        _ensure_officer(actor)
        request.refresh_from_db()
        if request.state not in PREVIEWABLE:
            raise ConflictError(f"A request that is {request.get_state_display().lower()} cannot be previewed.")
        plans = source_plans(identifiers_of(request))
        found: list[tuple[SourcePlan, list[int] | None, str]] = []
        for plan in plans:
            try:
                counts = target.count(
                    _params(plan),
                    [(d.table, d.match.condition) for d in plan.datasets],
                    timeout_ms=settings.SUBJECTS_STATEMENT_TIMEOUT_MS,
                )
                found.append((plan, counts, ""))
            except target.TargetError as exc:
                found.append((plan, None, str(exc)))
        with transaction.atomic():
            request = _lock(request)
            if request.state not in PREVIEWABLE:
                raise ConflictError("The request changed while it was previewed: try again.")
            request.datasets.all().delete()
            rows: list[RequestDataset] = []
            errors = []
            for plan, numbers, error in found:
                if error:
                    errors.append(f"{plan.source.name}: {error}")
                for i, d in enumerate(plan.datasets):
                    rows.append(
                        RequestDataset(
                            request=request,
                            dataset=d.dataset,
                            matched=None if numbers is None else numbers[i],
                            paths=list(d.match.paths),
                            action=_action(request.kind, d.action),
                            legal_basis=d.legal_basis,
                            reason=d.reason,
                            error=error,
                        )
                    )
            RequestDataset.objects.bulk_create(rows)
            request.state = RequestState.NEEDS_ATTENTION if errors else RequestState.PREVIEWED
            request.error = "; ".join(errors)[:2000]
            request.previewed_at, request.previewed_by = timezone.now(), actor
            request.approved_by, request.approved_at, request.approved_digest = None, None, ""
            request.save(
                update_fields=[
                    "state",
                    "error",
                    "previewed_at",
                    "previewed_by",
                    "approved_by",
                    "approved_at",
                    "approved_digest",
                ]
            )
            audit.record(
                action="subject_request.previewed",
                actor=actor,
                target=request,
                metadata={
                    "state": request.state,
                    "datasets": len(rows),
                    "matching_datasets": sum(1 for r in rows if r.matched),
                    "rows": sum(r.matched or 0 for r in rows),
                    "failed_sources": len(errors),
                },
            )
    return request


def approval_refusal(actor: Any, request: SubjectRequest) -> str:
    """Why `actor` may not approve `request` by separation of duties ("" if nothing stands in the
    way): not one's own request; and for a self-service request (filed by the subject, who is no
    officer) not the officer who previewed it, so that two officers still see every request."""
    if request.created_by_id == actor.pk:
        return "You cannot approve a request you created (separation of duties)."
    if request.self_service and request.previewed_by_id == actor.pk:
        return "You previewed this self-service request: another privacy officer approves it (separation of duties)."
    return ""


def _action(kind: str, handling: str) -> str:
    """What the request does to a dataset: its handling (erasure, access), or the kind's action."""
    if kind == RequestKind.RECTIFICATION:
        return RequestAction.RETAIN if handling == HandlingAction.RETAIN else RequestAction.RECTIFY
    if kind == RequestKind.RESTRICTION:
        return RequestAction.RESTRICT
    return handling


def approval_digest(request: SubjectRequest) -> str:
    """A keyed digest of what an approval covers: the kind, the identifiers, the corrections and the
    preview's datasets (matched rows, action). Never stored with the values, which stay encrypted."""
    content = {
        "kind": request.kind,
        "identifiers": identifiers_of(request),
        "corrections": json.loads(crypto.decrypt(request.corrections_encrypted) or "[]"),
        "datasets": sorted(request.datasets.values_list("dataset_id", "matched", "action")),
    }
    text = json.dumps(content, sort_keys=True, default=str)
    return salted_hmac("subjects.approval", text, algorithm="sha256").hexdigest()


def approval_holds(request: SubjectRequest) -> bool:
    """The request is still what was approved (a rectification's corrections included)."""
    return bool(request.approved_digest) and constant_time_compare(request.approved_digest, approval_digest(request))


def subject_request_approve(*, actor: Any, request: SubjectRequest) -> SubjectRequest:
    """A privacy officer other than its creator approves the previewed request (a rectification: with
    its corrections, by an officer who did not set them either)."""
    with refusal_recorded(action="subject_request.approve", actor=actor, target=request):
        _ensure_officer(actor)
        with transaction.atomic():
            request = _lock(request)
            refusal = approval_refusal(actor, request)
            if refusal:
                raise NotPermitted(refusal)
            if request.state != RequestState.PREVIEWED:
                raise ConflictError(
                    f"Only a previewed request can be approved; this one is {request.get_state_display().lower()}."
                )
            if request.kind == RequestKind.RECTIFICATION:
                from .rectification import corrections_of, validate

                if not request.corrections_encrypted:
                    raise ConflictError("Set the corrections before approving a rectification.")
                if request.corrections_set_by_id == actor.pk:
                    raise NotPermitted("You cannot approve corrections you set (separation of duties).")
                validate(request, corrections_of(request))
            request.state, request.approved_by, request.approved_at = RequestState.APPROVED, actor, timezone.now()
            request.approved_digest = approval_digest(request)
            request.save(update_fields=["state", "approved_by", "approved_at", "approved_digest"])
            audit.record(
                action="subject_request.approved", actor=actor, target=request, metadata={"kind": request.kind}
            )
    return request


def subject_request_extend(*, actor: Any, request: SubjectRequest, reason: str) -> SubjectRequest:
    """Move the deadline by SUBJECTS_EXTENSION_DAYS, once, for a stated reason (Art. 12(3))."""
    with refusal_recorded(action="subject_request.extend", actor=actor, target=request):
        _ensure_officer(actor)
        reason = (reason or "").strip()
        if not reason:
            raise InvalidInput("Say why the deadline is extended.", field="reason")
        with transaction.atomic():
            request = _lock(request)
            if request.extended_at is not None:
                raise ConflictError("The deadline was extended once already.")
            if request.state == RequestState.DONE:
                raise ConflictError("The request is done.")
            before = request.due_at
            request.due_at = before + dt.timedelta(days=settings.SUBJECTS_EXTENSION_DAYS)
            request.extended_at, request.extension_reason = timezone.now(), reason[:2000]
            request.save(update_fields=["due_at", "extended_at", "extension_reason"])
            audit.record(
                action="subject_request.extended",
                actor=actor,
                target=request,
                changes={"due_at": [before.isoformat(), request.due_at.isoformat()]},
                reason=reason[:500],
            )
    return request


def _check_executable(actor: Any, request: SubjectRequest) -> None:
    _ensure_officer(actor)
    if request.kind not in EXECUTABLE:
        raise ConflictError(f"{request.get_kind_display()} cannot be executed.")
    if request.state != RequestState.APPROVED:
        raise ConflictError(
            f"Only an approved request can be executed; this one is {request.get_state_display().lower()}."
        )


def _claim(actor: Any, request: SubjectRequest) -> SubjectRequest:
    with transaction.atomic():
        request = _lock(request)
        _check_executable(actor, request)
        request.state, request.executed_by, request.error = RequestState.EXECUTING, actor, ""
        request.executing_since = timezone.now()  # the lease of subjects.services.recovery starts
        request.save(update_fields=["state", "executed_by", "error", "executing_since"])
        audit.record(action="subject_request.execution_started", actor=actor, target=request)
    return request


def subject_request_execute_later(*, actor: Any, request: SubjectRequest) -> None:
    """Checked and audited now; a worker executes it (subjects.tasks.execute_subject_request)."""
    from celery import current_app

    with refusal_recorded(action="subject_request.execute", actor=actor, target=request):
        with transaction.atomic():
            request = _lock(request)
            _check_executable(actor, request)
            audit.record(action="subject_request.execute_requested", actor=actor, target=request)
            pk, actor_pk = request.pk, actor.pk
            transaction.on_commit(
                lambda: current_app.send_task("subjects.tasks.execute_subject_request", args=[pk, actor_pk])
            )


def subject_request_execute(*, actor: Any, request: SubjectRequest) -> SubjectRequest:
    """Carry out an approved request now (the task calls this; so do tests)."""
    from .execution import erase, export
    from .rectification import rectify
    from .restriction import restrict

    with refusal_recorded(action="subject_request.execute", actor=actor, target=request):
        request = _claim(actor, request)
    try:
        if request.kind in DIGEST_CHECKED and not approval_holds(request):
            return finish(
                request,
                actor,
                RequestState.NEEDS_ATTENTION,
                "The request changed since its approval: preview and approve it again.",
            )
        plans = source_plans(identifiers_of(request))
        previewed = {r.dataset_id: r for r in request.datasets.all()}
        planned = {d.dataset.pk for p in plans for d in p.datasets}
        if planned != set(previewed):
            return finish(
                request, actor, RequestState.NEEDS_ATTENTION, "The catalog changed since the preview: preview again."
            )
        if request.kind == RequestKind.ACCESS:
            return export(request, actor, plans, previewed)
        if request.kind == RequestKind.RECTIFICATION:
            return rectify(request, actor, plans, previewed)
        if request.kind == RequestKind.RESTRICTION:
            return restrict(request, actor, plans, previewed)
        return erase(request, actor, plans, previewed)
    except Exception as exc:
        finish(request, actor, RequestState.FAILED, f"Execution stopped: {type(exc).__name__}.")
        raise


def finish(
    request: SubjectRequest,
    actor: Any,
    state: str,
    error: str = "",
    *,
    expected: str = RequestState.EXECUTING,
    **metadata: Any,
) -> SubjectRequest:
    """End the request in `state`, from `expected` (an execution; or a restriction's wait for its
    owners' acknowledgements, subjects.services.restriction)."""
    with transaction.atomic():
        request = _lock(request)
        if request.state != expected:
            # Moved on as stalled meanwhile (subjects.services.recovery): that state stands; this
            # late end is recorded, not applied.
            audit.record(
                action="subject_request.executed_late",
                actor=actor,
                target=request,
                outcome="failed",
                metadata={"state": state, "current_state": request.state},
            )
            return request
        request.state, request.error, request.finished_at = state, error[:2000], timezone.now()
        request.save(update_fields=["state", "error", "finished_at"])
        outcomes = list(request.datasets.values_list("outcome", flat=True))
        audit.record(
            action="subject_request.executed",
            actor=actor,
            target=request,
            outcome="success" if state == RequestState.DONE else "failed",
            reason=error[:500],
            metadata={
                "state": state,
                "datasets": len(outcomes),
                **{k: outcomes.count(k) for k in DatasetOutcome.values if outcomes.count(k)},
                **metadata,
            },
        )
    return request


def handled(action: str) -> bool:
    return action in (HandlingAction.ERASE, HandlingAction.ANONYMISE)

"""Every endpoint and method, for every kind of caller, with the exact status it must answer.

Callers: anonymous; the analyst (requester, grantee of `granted`); the owner of another dataset;
the owner of the pending request's dataset; a security officer; an auditor; a governance admin;
and `small`: the owner again, through a token holding only the `read` scope.

404 rather than 403 where the object is outside what the caller may see (ids cannot be probed);
403 where the caller sees the object but may not do this (see docs/api.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import transaction

from governance.models import ColumnTag
from tests.api.conftest import World, error

ACTORS = ["anonymous", "analyst", "other_owner", "owner", "officer", "auditor", "gov_admin", "small"]


def row(*codes: int) -> dict[str, int]:
    assert len(codes) == len(ACTORS)
    return dict(zip(ACTORS, codes, strict=True))


ALL_READ = row(401, 200, 200, 200, 200, 200, 200, 200)
# A checks-as-code document changing the threshold of the world's check on the ledger.
AS_CODE = {
    "version": 1,
    "datasets": [
        {
            "dataset": "{source}:finance.ledger",
            "checks": [{"name": "amount present", "kind": "completeness", "column": "amount", "threshold": 0.5}],
        }
    ],
}
# A policy document changing the longest grant of Internal data (docs/policy-as-code.md).
POLICY = {"version": 1, "classifications": [{"slug": "internal", "max_duration": "30 days"}]}

# (method, path with {placeholders} filled from the world, body, expected status per actor)
MATRIX: list[tuple[str, str, dict[str, Any] | None, dict[str, int]]] = [
    ("get", "/api/v1/classifications/", None, ALL_READ),
    ("get", "/api/v1/classifications/internal/", None, ALL_READ),
    ("get", "/api/v1/datasets/", None, ALL_READ),
    ("get", "/api/v1/datasets/{ledger}/", None, ALL_READ),
    ("get", "/api/v1/datasets/{ledger}/access/", None, row(401, 403, 403, 200, 200, 200, 200, 200)),
    ("get", "/api/v1/roles/", None, ALL_READ),
    # Column tags: those of the datasets one stewards (owner: hr.employees; officers, admins, auditors: all).
    ("get", "/api/v1/column-tags/", None, ALL_READ),
    ("get", "/api/v1/column-tags/{tag}/", None, row(401, 404, 404, 200, 200, 200, 200, 200)),
    ("post", "/api/v1/column-tags/{tag}/confirm/", {}, row(401, 404, 404, 200, 200, 403, 200, 403)),
    # The tag is confirmed: only officers and admins may reject it.
    ("post", "/api/v1/column-tags/{tag}/reject/", {}, row(401, 404, 404, 403, 200, 403, 200, 403)),
    (
        "post",
        "/api/v1/column-tags/decide/",
        {"decision": "confirm", "ids": ["{tag}"]},
        row(401, 404, 404, 200, 200, 403, 200, 403),
    ),
    ("post", "/api/v1/column-tags/preview/", {"ids": ["{tag}"]}, row(401, 404, 404, 200, 200, 403, 200, 200)),
    # Row filters: the filters of the datasets one sees; defined by the dataset's owners and stewards,
    # officers and governance admins (the `approve` scope).
    ("get", "/api/v1/row-filters/", None, ALL_READ),
    (
        "post",
        "/api/v1/row-filters/",
        {"dataset": "{ledger}", "name": "one", "expression": "id = 1"},
        row(401, 403, 403, 201, 201, 403, 201, 403),
    ),
    (
        "post",
        "/api/v1/row-filters/security/",
        {"dataset": "{ledger}", "force": True, "confirmed": ["reporting"]},
        row(401, 403, 403, 200, 200, 403, 200, 403),
    ),
    ("get", "/api/v1/access-requests/", None, ALL_READ),
    ("get", "/api/v1/access-requests/?view=awaiting", None, ALL_READ),
    ("get", "/api/v1/access-requests/{pending}/", None, row(401, 200, 404, 200, 200, 200, 200, 200)),
    (
        "post",
        "/api/v1/access-requests/",
        {"dataset": "{ledger}", "level": "write", "duration_days": 3, "justification": "month end"},
        row(401, 201, 201, 201, 201, 403, 201, 403),
    ),
    (
        "post",
        "/api/v1/access-requests/{pending}/approve/",
        {"comment": "ok"},
        row(401, 403, 404, 200, 403, 403, 403, 403),
    ),
    (
        "post",
        "/api/v1/access-requests/{pending}/deny/",
        {"comment": "not needed"},
        row(401, 403, 404, 200, 403, 403, 403, 403),
    ),
    ("post", "/api/v1/access-requests/{pending}/cancel/", {}, row(401, 200, 404, 403, 403, 403, 403, 403)),
    ("get", "/api/v1/grants/", None, ALL_READ),
    ("get", "/api/v1/grants/{granted}/", None, row(401, 200, 200, 404, 200, 200, 200, 404)),
    (
        "post",
        "/api/v1/grants/{granted}/revoke/",
        {"reason": "no longer needed"},
        row(401, 200, 200, 404, 200, 403, 200, 403),
    ),
    ("get", "/api/v1/provisioning-jobs/", None, ALL_READ),
    ("get", "/api/v1/provisioning-jobs/{job}/", None, row(401, 200, 200, 404, 200, 200, 200, 404)),
    ("post", "/api/v1/provisioning-jobs/{job}/retry/", {}, row(401, 403, 403, 404, 200, 403, 200, 403)),
    ("get", "/api/v1/drift-findings/", None, ALL_READ),
    ("get", "/api/v1/drift-findings/{finding}/", None, row(401, 404, 404, 404, 200, 200, 200, 404)),
    ("get", "/api/v1/sources/", None, row(401, 403, 403, 403, 200, 200, 200, 403)),
    ("get", "/api/v1/sources/{source}/", None, row(401, 403, 403, 403, 200, 200, 200, 403)),
    (
        "post",
        "/api/v1/sources/",
        {"name": "lake", "host": "db.internal", "database": "lake", "username": "portal", "password": "s3cret-pw"},
        row(401, 403, 403, 403, 403, 403, 201, 403),
    ),
    ("patch", "/api/v1/sources/{source}/", {"description": "the DWH"}, row(401, 403, 403, 403, 403, 403, 200, 403)),
    # The fixture's source has provisioning off: an admin gets a 409 (the source's state is in the way), everyone
    # else a 403.
    ("post", "/api/v1/sources/{source}/reconcile/", {}, row(401, 403, 403, 403, 403, 403, 409, 403)),
    # A catalog sync is started for a worker (202 with the operation to poll); its starter (the admin), officers and
    # auditors see an operation, anyone else gets a 404.
    ("post", "/api/v1/sources/{source}/sync/", {}, row(401, 403, 403, 403, 403, 403, 202, 403)),
    ("get", "/api/v1/operations/{operation}/", None, row(401, 404, 404, 404, 200, 200, 200, 404)),
    # The fixture's source is PostgreSQL: registering an S3 prefix on it is a clear 400 for an admin.
    (
        "post",
        "/api/v1/sources/{source}/s3-datasets/",
        {"bucket": "lake", "prefix": "sales"},
        row(401, 403, 403, 403, 403, 403, 400, 403),
    ),
    (
        "post",
        "/api/v1/sources/{source}/principals/",
        {"name": "ana_login", "user": "analyst"},
        row(401, 403, 403, 403, 403, 403, 201, 403),
    ),
    # Effective access: officers, admins, auditors, and the owners of datasets on the source (their rows).
    ("get", "/api/v1/effective-access/?source={source}", None, row(401, 403, 200, 200, 200, 200, 200, 200)),
    ("get", "/api/v1/effective-access/", None, row(401, 403, 400, 400, 400, 400, 400, 400)),
    ("get", "/api/v1/effective-access/?source=nowhere", None, row(401, 403, 404, 404, 404, 404, 404, 404)),
    ("get", "/api/v1/audit-events/", None, row(401, 403, 403, 403, 200, 200, 200, 403)),
    ("get", "/api/v1/audit-events/export/", None, row(401, 403, 403, 403, 200, 200, 200, 403)),
    ("get", "/api/v1/tokens/", None, ALL_READ),
    # Access reviews: other_owner reviews the one item (the analyst's grant); officers and governance admins run
    # campaigns; auditors read everything. Outside what one sees: 404.
    ("get", "/api/v1/reviews/campaigns/", None, ALL_READ),
    ("get", "/api/v1/reviews/campaigns/{campaign}/", None, row(401, 404, 200, 404, 200, 200, 200, 404)),
    ("post", "/api/v1/reviews/campaigns/", {"name": "Q1"}, row(401, 403, 403, 403, 201, 403, 201, 403)),
    # Started already (409 for those who run campaigns); closing needs every item decided (409).
    ("post", "/api/v1/reviews/campaigns/{campaign}/start/", {}, row(401, 404, 403, 404, 409, 403, 409, 403)),
    ("post", "/api/v1/reviews/campaigns/{campaign}/close/", {}, row(401, 404, 403, 404, 409, 403, 409, 403)),
    ("get", "/api/v1/reviews/campaigns/{campaign}/evidence/", None, row(401, 404, 403, 404, 200, 200, 200, 404)),
    ("get", "/api/v1/reviews/campaigns/{campaign}/evidence-pdf/", None, row(401, 404, 403, 404, 200, 200, 200, 404)),
    ("get", "/api/v1/reviews/items/", None, ALL_READ),
    ("get", "/api/v1/reviews/items/{item}/", None, row(401, 404, 200, 404, 200, 200, 200, 404)),
    # Only the item's reviewer decides it (officers and admins see it, and are refused).
    (
        "post",
        "/api/v1/reviews/items/{item}/decide/",
        {"decision": "keep", "comment": "still needed"},
        row(401, 404, 200, 404, 403, 403, 403, 403),
    ),
    (
        "post",
        "/api/v1/reviews/items/decide/",
        {"decision": "revoke", "comment": "left", "ids": ["{item}"]},
        row(401, 404, 200, 404, 403, 403, 403, 403),
    ),
    # Its reviewer or a campaign manager delegates it, to an eligible reviewer (an officer).
    (
        "post",
        "/api/v1/reviews/items/{item}/delegate/",
        {"to": "officer"},
        row(401, 404, 200, 404, 200, 403, 200, 403),
    ),
    ("get", "/api/v1/compliance/posture/", None, row(401, 403, 403, 403, 200, 200, 200, 403)),
    # Data quality: definitions and results are catalog metadata; the dataset's owner (and stewards)
    # and governance admins change them, with the `approve` scope.
    ("get", "/api/v1/quality/checks/", None, ALL_READ),
    ("get", "/api/v1/quality/checks/{quality_check}/", None, ALL_READ),
    (
        "post",
        "/api/v1/quality/checks/",
        {"dataset": "{ledger}", "name": "id present", "kind": "completeness", "column": "id"},
        row(401, 403, 403, 201, 403, 403, 201, 403),
    ),
    (
        "patch",
        "/api/v1/quality/checks/{quality_check}/",
        {"threshold": 0.5},
        row(401, 403, 403, 200, 403, 403, 200, 403),
    ),
    # Only owner-written SQL is reviewed: a completeness check is a 400 for those who may review.
    ("post", "/api/v1/quality/checks/{quality_check}/review/", {}, row(401, 403, 403, 400, 403, 403, 400, 403)),
    ("delete", "/api/v1/quality/checks/{quality_check}/", None, row(401, 403, 403, 204, 403, 403, 204, 403)),
    ("get", "/api/v1/quality/runs/", None, ALL_READ),
    ("get", "/api/v1/quality/runs/{quality_run}/", None, ALL_READ),
    ("get", "/api/v1/quality/datasets/", None, ALL_READ),
    ("get", "/api/v1/quality/datasets/{ledger}/", None, ALL_READ),
    ("post", "/api/v1/quality/datasets/{ledger}/run/", {}, row(401, 403, 403, 202, 403, 403, 202, 403)),
    # Checks as code: exporting and planning are reads (the `read` scope: plan changes nothing; auditors
    # POST nothing, as for the tag preview); applying needs the `approve` scope and the right to define
    # the checks of every dataset named.
    ("get", "/api/v1/quality/as-code/?dataset={source}:finance.ledger", None, ALL_READ),
    ("get", "/api/v1/quality/as-code/schema/", None, ALL_READ),
    ("post", "/api/v1/quality/as-code/plan/", AS_CODE, row(401, 200, 200, 200, 200, 403, 200, 200)),
    ("post", "/api/v1/quality/as-code/apply/", AS_CODE, row(401, 403, 403, 200, 403, 403, 200, 403)),
    # Differentially private aggregates (docs/privacy.md): one's own aggregate grants only; `granted`
    # is a read grant, so no one finds it there. The owners and stewards (and officers, admins) set
    # a dataset's privacy policy; everyone who sees the catalog reads it.
    ("get", "/api/v1/privacy/grants/", None, ALL_READ),
    ("get", "/api/v1/privacy/grants/{granted}/", None, row(401, 404, 404, 404, 404, 404, 404, 404)),
    ("get", "/api/v1/privacy/grants/{granted}/queries/", None, row(401, 404, 404, 404, 404, 404, 404, 404)),
    (
        "post",
        "/api/v1/privacy/grants/{granted}/query/",
        {"kind": "count", "epsilon": "0.1"},
        row(401, 404, 404, 404, 404, 403, 404, 403),
    ),
    ("get", "/api/v1/privacy/datasets/{ledger}/policy/", None, ALL_READ),
    (
        "put",
        "/api/v1/privacy/datasets/{ledger}/policy/",
        {"aggregates_only": False},
        row(401, 403, 403, 200, 200, 403, 200, 403),
    ),
    # Data-subject requests (docs/subjects.md): privacy officers act (none of these callers is one);
    # officers, admins and auditors read; nobody else sees a request (404). Writes need `approve`.
    ("get", "/api/v1/subject-requests/", None, ALL_READ),
    ("get", "/api/v1/subject-requests/{subject_request}/", None, row(401, 404, 404, 404, 200, 200, 200, 404)),
    (
        "post",
        "/api/v1/subject-requests/",
        {"kind": "erasure", "identifiers": {"email": "a@example.com"}},
        row(401, 403, 403, 403, 403, 403, 403, 403),
    ),
    ("post", "/api/v1/subject-requests/{subject_request}/preview/", {}, row(401, 404, 404, 404, 403, 403, 403, 403)),
    ("post", "/api/v1/subject-requests/{subject_request}/approve/", {}, row(401, 404, 404, 404, 403, 403, 403, 403)),
    (
        "post",
        "/api/v1/subject-requests/{subject_request}/extend/",
        {"reason": "complex"},
        row(401, 404, 404, 404, 403, 403, 403, 403),
    ),
    ("post", "/api/v1/subject-requests/{subject_request}/execute/", {}, row(401, 404, 404, 404, 403, 403, 403, 403)),
    ("get", "/api/v1/subject-requests/{subject_request}/export/", None, row(401, 404, 404, 404, 403, 403, 403, 403)),
    (
        "post",
        "/api/v1/subject-requests/{subject_request}/corrections/",
        {"corrections": [{"dataset": 1, "column": "id", "value": "2"}]},
        row(401, 404, 404, 404, 403, 403, 403, 403),
    ),
    # Restrictions (a marker per dataset): the dataset's owners and stewards, and governance admins,
    # see and acknowledge them; nobody else sees one (404); auditors write nothing (403).
    ("get", "/api/v1/subject-restrictions/", None, ALL_READ),
    (
        "post",
        "/api/v1/subject-restrictions/{restriction}/acknowledge/",
        {},
        row(401, 404, 404, 200, 404, 403, 200, 403),
    ),
    # The owners' side: catalog metadata everyone reads; identifiers are decided like PII tags (owners,
    # stewards, security officers, governance admins); suggestions are asked by privacy officers and
    # governance admins (an unknown source: 400); handling and relationships by owners and admins.
    ("get", "/api/v1/subject-identifiers/", None, ALL_READ),
    ("get", "/api/v1/subject-identifiers/{subject_identifier}/", None, ALL_READ),
    (
        "post",
        "/api/v1/subject-identifiers/{subject_identifier}/confirm/",
        {},
        row(401, 403, 403, 200, 200, 403, 200, 403),
    ),
    (
        "post",
        "/api/v1/subject-identifiers/{subject_identifier}/reject/",
        {},
        row(401, 403, 403, 200, 200, 403, 200, 403),
    ),
    ("post", "/api/v1/subject-identifiers/suggest/", {"source": "nope"}, row(401, 403, 403, 403, 403, 403, 400, 403)),
    ("get", "/api/v1/subject-relationships/", None, ALL_READ),
    ("get", "/api/v1/subject-relationships/{subject_relationship}/", None, ALL_READ),
    (
        "post",
        "/api/v1/subject-relationships/",
        {"dataset": "{ledger}", "columns": ["amount"], "referenced": "{ledger}", "referenced_columns": ["id"]},
        row(401, 403, 403, 201, 403, 403, 201, 403),
    ),
    ("get", "/api/v1/subject-handling/{ledger}/", None, ALL_READ),
    ("put", "/api/v1/subject-handling/{ledger}/", {"action": "anonymise"}, row(401, 403, 403, 200, 403, 403, 200, 403)),
    # Break-glass (docs/break-glass.md): the analyst broke the glass on `other` (lazily, see fill());
    # officers, admins and auditors see every use, anyone else their own. Only the on-call group
    # breaks the glass (nobody of the world but the analyst once on call: a wrong code is a 400);
    # only an officer other than the person reviews.
    ("get", "/api/v1/break-glass/", None, ALL_READ),
    ("get", "/api/v1/break-glass/{bg_use}/", None, row(401, 200, 404, 404, 200, 200, 200, 404)),
    (
        "post",
        "/api/v1/break-glass/",
        {"dataset": "{other}", "reason": "INC-2", "hours": 1, "otp_token": "000000"},
        row(401, 403, 403, 403, 403, 403, 403, 403),
    ),
    (
        "post",
        "/api/v1/break-glass/{bg_use}/review/",
        {"outcome": "appropriate", "note": ""},
        row(401, 403, 404, 404, 200, 403, 403, 403),
    ),
    # Policy as code (docs/policy-as-code.md): governance admins, officers and auditors export
    # (auditors POST nothing, as elsewhere); only governance admins apply; the schema is for any
    # token with `policy:read`; `small` (a `read` token) reaches none of them.
    ("get", "/api/v1/policy/", None, row(401, 403, 403, 403, 200, 200, 200, 403)),
    ("get", "/api/v1/policy/schema/", None, row(401, 200, 200, 200, 200, 200, 200, 403)),
    ("post", "/api/v1/policy/plan/", POLICY, row(401, 403, 403, 403, 200, 403, 200, 403)),
    ("post", "/api/v1/policy/apply/", POLICY, row(401, 403, 403, 403, 403, 403, 200, 403)),
    ("get", "/api/schema/", None, row(200, 200, 200, 200, 200, 200, 200, 200)),
]


def _break_glass_use(world: World) -> int:
    """The analyst's break of the glass on `other`, made when a case names it (other cases stay as they were)."""
    from breakglass.models import BreakGlassUse
    from tests.breakglass.world import break_glass_use

    use = BreakGlassUse.objects.filter(user=world.users["analyst"]).first()
    return (use or break_glass_use(world.users["analyst"], world.other)).pk


def _restriction(world: World) -> int:
    """A restriction waiting on the ledger (made when a case names it), as an executed restriction leaves it."""
    from subjects.models import RequestDataset

    row, _ = RequestDataset.objects.get_or_create(
        request=world.subject_request,
        dataset=world.ledger,
        defaults={"action": "restrict", "outcome": "notified", "matched": 1},
    )
    return row.pk


def fill(template: Any, world: World) -> Any:
    if isinstance(template, str) and "{bg_use}" in template:
        template = template.replace("{bg_use}", str(_break_glass_use(world)))
    if isinstance(template, str) and "{restriction}" in template:
        template = template.replace("{restriction}", str(_restriction(world)))
    values = {
        "ledger": world.ledger.pk,
        "pending": world.pending.pk,
        "granted": world.granted.pk,
        "job": world.job.pk,
        "finding": world.finding.pk,
        "source": world.source.name,
        "campaign": world.campaign.pk,
        "item": world.review_item.pk,
        "operation": world.operation.pk,
        "quality_check": world.quality_check.pk,
        "quality_run": world.quality_run.pk,
        "subject_request": world.subject_request.pk,
        "subject_identifier": world.subject_identifier.pk,
        "subject_relationship": world.subject_relationship.pk,
        "other": world.other.pk,
        "tag": ColumnTag.objects.filter(column__dataset=world.employees).order_by("pk").values_list("pk", flat=True)[0],
    }
    if isinstance(template, list):
        return [fill(v, world) for v in template]
    if isinstance(template, str):
        if template.startswith("{") and template.endswith("}") and template[1:-1] in values:
            return values[template[1:-1]]
        return template.format(**values)
    if isinstance(template, dict):
        return {k: fill(v, world) for k, v in template.items()}
    return template


CASES = [pytest.param(method, path, body, codes, id=f"{method} {path}") for method, path, body, codes in MATRIX]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "path", "body", "codes"), CASES)
def test_authorization_matrix(
    world: World, api: Callable[..., Any], method: str, path: str, body: Any, codes: dict[str, int]
) -> None:
    """One route, every caller: each call in a savepoint rolled back after it, so every caller meets
    the world as it was built (one world per route rather than per call: the matrix's 800 calls
    built 800 worlds, a quarter of an hour of `make test`). Every mismatch is reported, not the first."""
    clients = {
        "anonymous": api(None),
        "small": api(world.users["owner"], scopes="read"),
        **{actor: api(world.users[actor]) for actor in ACTORS if actor not in ("anonymous", "small")},
    }
    url = fill(path, world)
    kwargs = {"format": "json", "data": fill(body, world)} if body is not None else {}
    wrong: list[str] = []
    for actor in ACTORS:
        expected = codes[actor]
        with transaction.atomic():
            response = getattr(clients[actor], method)(url, **kwargs)
            transaction.set_rollback(True)
        if response.status_code != expected:
            wrong.append(f"{actor}: {response.status_code}, expected {expected}: {getattr(response, 'data', None)}")
            continue
        if expected >= 400:
            err = error(response)
            if not (err["code"] and err["message"]):
                wrong.append(f"{actor}: {expected} without a code and message: {err}")
            if expected == 401 and response["WWW-Authenticate"] != "Bearer":
                wrong.append(f"{actor}: 401 without WWW-Authenticate: Bearer")
    assert not wrong, "\n".join(wrong)


def test_every_endpoint_is_in_the_matrix() -> None:
    """A new route must be added to the matrix (and so decide who may call it)."""
    from django.urls import get_resolver

    from breakglass.api.urls import router as break_glass_router
    from governance.api.urls import router
    from policy.api.urls import router as policy_router
    from privacy.api.urls import router as privacy_router
    from quality.api.urls import router as quality_router
    from reviews.api.urls import router as reviews_router
    from subjects.api.urls import router as subjects_router

    covered = {path.split("?")[0] for _, path, _, _ in MATRIX}
    routes = set()
    routers = (("", router.urls), ("reviews/", reviews_router.urls), ("quality/", quality_router.urls))
    for prefix, urls in (
        *routers,
        ("privacy/", privacy_router.urls),
        ("", subjects_router.urls),
        ("break-glass/", break_glass_router.urls),
        ("policy/", policy_router.urls),
    ):
        for url in urls:
            pattern = str(url.pattern)
            if "(?P<format>" in pattern or pattern in ("^$",):
                continue
            routes.add(prefix + pattern.lstrip("^"))
    assert routes, get_resolver()

    def resource(path: str) -> str:
        parts = path.lstrip("^").split("/")
        # reviews/campaigns, reviews/items, quality/checks, privacy/grants, ...
        return "/".join(parts[:2]) if parts[0] in ("reviews", "quality", "privacy", "policy") else parts[0]

    prefixes = {resource(p.replace("/api/v1/", "")) for p in covered}
    for pattern in routes:
        assert resource(pattern) in prefixes, f"{pattern} is not in the authorization matrix"
    # Routes outside the router (the compliance posture, config/urls.py): each one by its path.
    from compliance.api_urls import urlpatterns as compliance_routes

    for url in compliance_routes:
        assert f"/api/v1/compliance/{url.pattern}" in covered, f"compliance/{url.pattern} is not in the matrix"

"""IDOR sweep: every route that names one object, probed by a stranger holding all scopes.

The routes are read from the API router and the portal's URLconf, not listed by hand, so a new
detail route or action is probed the day it is added (and fails here until someone says which
object it names). The stranger is a signed-in requester with a token carrying every scope and no
relation to anything in the world: every object route must answer 403 or 404 with the error
envelope, show none of the object, and change nothing. Catalog routes (classifications, datasets,
roles) are readable by every signed-in user by design; their write-ish routes are still probed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import URLPattern

from accounts.models import ApiToken
from accounts.roles import REQUESTERS
from accounts.tokens import api_token_create
from audit.models import AuditEvent
from governance.models import (
    AccessRequest,
    ColumnTag,
    DataSource,
    DriftFinding,
    Grant,
    Operation,
    OperationKind,
    ProvisioningJob,
)
from governance.services.operations import operation_start
from governance.services.row_filters import row_filter_define
from tests.api.conftest import World, error

pytestmark = pytest.mark.django_db

# Routes anyone signed in may read: the catalog. Everything else names something private.
# A row filter is read by whoever may browse its dataset (the catalog): requesters choose one.
PUBLIC_READ = {"classification-detail", "dataset-detail", "role-detail", "row-filter-detail"}
MARKER = "idor-marker-7f3a"  # planted in the private objects: no refusal may show it


def api_routes() -> list[tuple[str, str, str]]:
    """(url name, regex, method) of every API route with a lookup, from the router."""
    from governance.api.urls import router

    out = []
    for url in router.urls:
        pattern = str(url.pattern)
        if not isinstance(url, URLPattern) or "(?P<" not in pattern or "(?P<format>" in pattern:
            continue
        for method in getattr(url.callback, "actions", {}):
            if method != "head":  # DRF adds it (as GET) to the shared dict after the first request
                out.append((url.name or "", pattern, method))
    return out


def basename_of(url_name: str) -> str:
    """The router basename of a route name ("source-s3-datasets" -> "source")."""
    from governance.api.urls import router

    names = [basename for _, _, basename in router.registry if url_name.startswith(basename + "-")]
    assert names, url_name
    return max(names, key=len)


def portal_routes() -> list[tuple[str, str]]:
    from governance.urls import urlpatterns

    out = []
    for pattern in urlpatterns:
        if isinstance(pattern, URLPattern) and "<" in str(pattern.pattern):
            out.append((pattern.name or "", str(pattern.pattern)))
    return out


def plant_marker(world: World) -> None:
    """Test arrangement (not a portal write): private text the sweep looks for in every answer."""
    AccessRequest.objects.filter(pk=world.pending.pk).update(justification=MARKER)
    ProvisioningJob.objects.filter(pk=world.job.pk).update(last_error=MARKER)
    DriftFinding.objects.filter(pk=world.finding.pk).update(detail=MARKER)
    Grant.objects.filter(pk=world.granted.pk).update(reason=MARKER)


def snapshot(world: World) -> Any:
    return (
        list(AccessRequest.objects.order_by("pk").values_list("pk", "state")),
        list(Grant.objects.order_by("pk").values_list("pk", "status", "revoked_at")),
        list(ProvisioningJob.objects.order_by("pk").values_list("pk", "status", "attempts")),
        list(DriftFinding.objects.order_by("pk").values_list("pk", "resolution")),
        list(DataSource.objects.order_by("pk").values_list("pk", "description", "host")),
        list(ApiToken.objects.order_by("pk").values_list("pk", "revoked_at")),
        list(ColumnTag.objects.order_by("pk").values_list("pk", "status", "decided_at")),
    )


@pytest.fixture
def stranger(make_user: Callable[..., Any]) -> Any:
    return make_user("stranger", REQUESTERS, staff=False)


def test_every_api_object_route_refuses_a_stranger(world: World, stranger: Any) -> None:
    from rest_framework.test import APIClient

    victim_token = api_token_create(user=world.users["analyst"], scopes="read", name="analyst laptop")
    event = AuditEvent.objects.filter(target_id=str(world.pending.pk)).first()
    assert event is not None
    # An admin's background catalog sync, with private text in its error (test arrangement).
    operation = operation_start(kind=OperationKind.CATALOG_SYNC, source=world.source, actor=world.users["gov_admin"])
    Operation.objects.filter(pk=operation.pk).update(error=MARKER)
    ids = {
        "classification": world.ledger.classification.slug,
        "dataset": world.ledger.pk,
        "column-tag": ColumnTag.objects.filter(column__dataset=world.employees).order_by("pk")[0].pk,
        "role": "finance-analysts",
        "access-request": world.pending.pk,
        "grant": world.granted.pk,
        "provisioning-job": world.job.pk,
        "drift-finding": world.finding.pk,
        "source": world.source.name,
        "audit-event": event.pk,
        "token": victim_token.token.key_id,
        "operation": operation.pk,
        "row-filter": row_filter_define(
            dataset=world.ledger, name="one", expression="id = 1", actor=world.users["gov_admin"]
        ).pk,
    }
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=stranger, scopes='read,request,approve,admin').secret}"
    )
    plant_marker(world)
    before = snapshot(world)
    routes = api_routes()
    assert len(routes) >= 15, routes
    probed = []
    for name, pattern, method in routes:
        basename = basename_of(name)
        assert basename in ids, f"{pattern}: which object does it name? Add it to the sweep."
        path = "/api/v1/" + re.sub(r"\(\?P<\w+>[^)]*\)", str(ids[basename]), pattern.lstrip("^").rstrip("$"))
        response = getattr(client, method)(path, data={"reason": "x", "comment": "x"}, format="json")
        probed.append((method, path, response.status_code))
        if name in PUBLIC_READ and method == "get":
            assert response.status_code == 200, (path, response.status_code)
            continue
        assert response.status_code in (403, 404), (method, path, response.status_code, response.content[:300])
        body = error(response)
        assert body["message"]
        assert MARKER not in response.content.decode(), path
    assert snapshot(world) == before, probed
    assert ApiToken.objects.get(key_id=victim_token.token.key_id).revoked_at is None
    # Positive control: each object route finds its object for someone entitled to it, so the
    # refusals above were about the stranger, not about a wrong id in the sweep.
    for name, pattern, method in routes:
        basename = basename_of(name)
        owner_of_token = basename == "token"
        entitled = APIClient()
        user = world.users["analyst"] if owner_of_token else world.users["gov_admin"]
        entitled.credentials(
            HTTP_AUTHORIZATION=f"Bearer {api_token_create(user=user, scopes='read,request,approve,admin').secret}"
        )
        path = "/api/v1/" + re.sub(r"\(\?P<\w+>[^)]*\)", str(ids[basename]), pattern.lstrip("^").rstrip("$"))
        if method == "get":
            found = entitled.get(path)
            assert found.status_code == 200, (path, found.status_code)


def test_every_portal_object_route_refuses_a_stranger(world: World, stranger: Any) -> None:
    client = Client()
    client.force_login(stranger)
    # Each portal route with an id, and the object of someone else it is probed with.
    ids = {
        "dataset": world.employees.pk,
        "request": world.employees.pk,
        "request_preview": world.employees.pk,
        "request_detail": world.pending.pk,
        "request_cancel": world.pending.pk,
        "grant_relinquish": world.granted.pk,
        "grant_reveal": world.granted.pk,
        "grant_end": world.granted.pk,
    }
    public = {"dataset", "request", "request_preview"}  # the catalog: any requester may look and ask
    plant_marker(world)
    before = snapshot(world)
    routes = portal_routes()
    assert len(routes) >= 7, routes
    for name, pattern in routes:
        assert name in ids, f"portal route {pattern}: which object does it name? Add it to the sweep."
        path = "/portal/" + re.sub(r"<int:\w+>", str(ids[name]), pattern)
        assert "<" not in path, f"portal route {pattern}: a converter the sweep does not fill in"
        for method in ("get", "post"):
            response = getattr(client, method)(path, {"reason": "x", "comment": "x"})
            if name in public:
                assert response.status_code in (200, 302, 405, 400), (method, path, response.status_code)
                continue
            assert response.status_code in (403, 404, 405), (method, path, response.status_code)
            assert MARKER not in response.content.decode(), (method, path)
    assert snapshot(world) == before
    # Sanity: the same pages do work for their owner, so the refusals above were about the stranger.
    owner = Client()
    owner.force_login(world.users["analyst"])
    assert owner.get(f"/portal/requests/{world.pending.pk}/").status_code == 200
    assert MARKER in owner.get(f"/portal/requests/{world.pending.pk}/").content.decode()  # the marker is visible

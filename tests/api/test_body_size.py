"""Request bodies longer than API_MAX_BODY_BYTES are a 413 in the error envelope, on every operation
that reads a body, change nothing, and are refused without being read to the end
(governance/api/parsers.py). DRF reads the stream itself, so Django's DATA_UPLOAD_MAX_MEMORY_SIZE is
no bound for the API."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import override_settings
from drf_spectacular.generators import SchemaGenerator

from audit.models import AuditEvent
from governance.api.parsers import JSONParser
from governance.models import AccessRequest, DataSource, Grant, RequestState
from tests.api.conftest import World, error
from tests.api.test_json_depth import fill, operations_with_a_body, own_aggregate_grant, own_break_glass_use

pytestmark = pytest.mark.django_db

LIMIT = 1_000


def padded(body: dict[str, Any], size: int) -> str:
    """`body` as JSON, padded with trailing whitespace (still valid JSON) to exactly `size` bytes."""
    text = json.dumps(body)
    assert len(text) <= size
    return text + " " * (size - len(text))


def test_the_default_limit_is_a_few_megabytes(settings: Any) -> None:
    assert settings.API_MAX_BODY_BYTES == 2 * 1024 * 1024


@override_settings(API_MAX_BODY_BYTES=LIMIT)
def test_a_body_over_the_limit_is_a_413_on_every_operation_and_changes_nothing(
    world: World, api: Callable[..., Any]
) -> None:
    own_aggregate_grant(world)  # made before counting: the sweep then changes nothing
    own_break_glass_use(world)  # likewise (a break-glass use is a request and a grant of its own)
    client = api(world.users["gov_admin"])
    counts = (AccessRequest.objects.count(), Grant.objects.count(), DataSource.objects.count())
    last_event = AuditEvent.objects.order_by("-pk").values_list("pk", flat=True).first() or 0
    body = padded({"reason": "x", "comment": "x"}, LIMIT + 1)
    for method, template in operations_with_a_body():
        path = fill(template, world)
        response = getattr(client, method)(path, data=body, content_type="application/json")
        assert response.status_code == 413, (method, path, response.status_code, response.content[:300])
        err = error(response)
        assert err["code"] == "payload_too_large", (method, path, err)
        assert err["message"] == f"Request body larger than {LIMIT} bytes; no request to this API needs that much."
    assert (AccessRequest.objects.count(), Grant.objects.count(), DataSource.objects.count()) == counts
    assert not AuditEvent.objects.filter(pk__gt=last_event).exclude(outcome__in=["denied", "failed"]).exists()
    assert AccessRequest.objects.get(pk=world.pending.pk).state == RequestState.PENDING


@override_settings(API_MAX_BODY_BYTES=LIMIT)
def test_a_body_of_exactly_the_limit_is_read(world: World, api: Callable[..., Any]) -> None:
    client = api(world.users["analyst"])
    response = client.post(
        f"/api/v1/access-requests/{world.pending.pk}/cancel/",
        data=padded({"reason": "no longer needed"}, LIMIT),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content[:300]
    assert AccessRequest.objects.get(pk=world.pending.pk).state == RequestState.CANCELLED


@override_settings(API_MAX_BODY_BYTES=LIMIT)
def test_the_parser_reads_one_byte_past_the_limit_and_no_more() -> None:
    """A client announcing gigabytes costs the server LIMIT + 1 bytes of reading, not gigabytes."""

    class Counting(io.BytesIO):
        asked: list[int] = []

        def read(self, size: int | None = -1) -> bytes:
            self.asked.append(-1 if size is None else size)
            return super().read(size)

    stream = Counting(b"[" + b"1," * 10_000 + b"1]")
    with pytest.raises(Exception) as refused:
        JSONParser().parse(stream, "application/json", {})
    assert getattr(refused.value, "status_code", None) == 413
    assert stream.asked == [LIMIT + 1] and stream.tell() == LIMIT + 1


def test_the_schema_declares_the_413_on_every_write() -> None:
    schema = SchemaGenerator().get_schema(request=None, public=True)
    for method, path in operations_with_a_body():
        responses = schema["paths"][path][method]["responses"]
        assert "413" in responses, (method, path)

"""The SCIM 2.0 edge under /scim/v2/: discovery, Users and Groups. Written on DRF rather than
django-scim2 because every write here must go through a service with its audit event and the
token owner as actor, which django-scim2's adapters (model.save() in the adapter) do not allow
cleanly; see docs/identity.md#scim.

Authentication: an API token with the `scim` scope (Bearer, as identity providers send it). No token:
401; a token without the scope: 403 (recorded). Every error is a SCIM error body.
"""

from __future__ import annotations

from typing import Any

from django.http import Http404
from rest_framework import exceptions, permissions
from rest_framework.parsers import JSONParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import ApiTokenAuthentication
from accounts.models import ApiToken, TokenScope
from accounts.tokens import api_token_scope_denied
from governance.errors import DomainError

from . import services
from .errors import ScimError, bad
from .models import ScimGroup
from .patch import apply_patch, key
from .resources import group_document, group_resource, project, user_document, user_resource
from .schema import (
    ERROR_SCHEMA,
    LIST_SCHEMA,
    MAX_RESULTS,
    SEARCH_SCHEMA,
    resource_type_document,
    schema_document,
    service_provider_config,
)
from .selectors import filtered, group_pk, groups_for_list, user_pk, users_for_list

MEDIA_TYPE = "application/scim+json"


class ScimRenderer(JSONRenderer):
    media_type = MEDIA_TYPE
    format = "scim"


class ScimParser(JSONParser):
    media_type = MEDIA_TYPE


class HasScimScope(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        token = request.auth
        if not isinstance(token, ApiToken):
            return False
        if token.has_scope(TokenScope.SCIM):
            return True
        api_token_scope_denied(token=token, scope=TokenScope.SCIM, method=request.method or "", path=request.path)
        return False


def error(status: int, detail: str, scim_type: str | None = None) -> Response:
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status), "detail": detail}
    if scim_type:
        body["scimType"] = scim_type
    return Response(body, status=status, content_type=MEDIA_TYPE)


class ScimView(APIView):
    # Not in the REST API's OpenAPI document: SCIM describes itself (/ServiceProviderConfig,
    # /ResourceTypes, /Schemas), and providers read that, not OpenAPI.
    schema = None
    authentication_classes = [ApiTokenAuthentication]
    permission_classes = [HasScimScope]
    parser_classes = [ScimParser, JSONParser]
    renderer_classes = [ScimRenderer, JSONRenderer]

    def handle_exception(self, exc: Exception) -> Response:
        if isinstance(exc, ScimError):
            return error(exc.status, exc.detail, exc.scim_type)
        if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
            response = error(401, str(exc.detail))
            response["WWW-Authenticate"] = 'Bearer realm="scim"'
            return response
        if isinstance(exc, exceptions.PermissionDenied):
            return error(403, "This call needs an API token with the 'scim' scope.")
        if isinstance(exc, exceptions.ParseError):
            return error(400, f"The body is not valid JSON: {exc.detail}", "invalidSyntax")
        if isinstance(exc, Http404 | exceptions.NotFound):
            return error(404, "Not found.")
        if isinstance(exc, exceptions.APIException):
            return error(exc.status_code, str(exc.detail))
        if isinstance(exc, DomainError):
            return error(exc.status, exc.message)
        raise exc

    def base(self, request: Request) -> str:
        return request.build_absolute_uri("/scim/v2").rstrip("/")

    def actor(self, request: Request) -> Any:
        return request.user

    def body(self, request: Request) -> Any:
        if not request.body:
            raise bad("The request needs a JSON body.", "invalidSyntax")
        return request.data

    def respond(self, data: Any, status: int = 200, location: str | None = None) -> Response:
        response = Response(data, status=status, content_type=MEDIA_TYPE)
        if location:
            response["Location"] = location
        return response


def _int(value: Any, name: str, default: int) -> int:
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise bad(f"{name} must be an integer.", "invalidValue") from None


# --- discovery -------------------------------------------------------------------------------------

KINDS = ("User", "Group")


def _list(resources: list[dict[str, Any]], total: int | None = None, start: int = 1) -> dict[str, Any]:
    return {
        "schemas": [LIST_SCHEMA],
        "totalResults": len(resources) if total is None else total,
        "startIndex": start,
        "itemsPerPage": len(resources),
        "Resources": resources,
    }


class ServiceProviderConfigView(ScimView):
    def get(self, request: Request) -> Response:
        return self.respond(service_provider_config(self.base(request)))


class ResourceTypesView(ScimView):
    def get(self, request: Request, name: str | None = None) -> Response:
        if name is None:
            return self.respond(_list([resource_type_document(k, self.base(request)) for k in KINDS]))
        if name not in KINDS:
            raise ScimError(404, f"No resource type {name!r}.")
        return self.respond(resource_type_document(name, self.base(request)))


class SchemasView(ScimView):
    def get(self, request: Request, urn: str | None = None) -> Response:
        documents = [schema_document(k, self.base(request)) for k in KINDS]
        if urn is None:
            return self.respond(_list(documents))
        for document in documents:
            if document["id"] == urn:
                return self.respond(document)
        raise ScimError(404, f"No schema {urn!r}.")


# --- resources -------------------------------------------------------------------------------------


class ResourceView(ScimView):
    kind = "User"

    def queryset(self) -> Any:
        return users_for_list() if self.kind == "User" else groups_for_list()

    def render(self, obj: Any, request: Request) -> dict[str, Any]:
        if self.kind == "User":
            return user_resource(obj, self.base(request))
        return group_resource(obj, self.base(request))

    def one(self, pk: str) -> Any:
        found: Any = None
        if self.kind == "User" and (user_id := user_pk(pk)) is not None:
            found = users_for_list().filter(pk=user_id).first()
        elif self.kind == "Group" and (group_id := group_pk(pk)) is not None:
            found = groups_for_list().filter(pk=group_id).first()
        if found is None:
            raise ScimError(404, f"No {self.kind} {pk}.")
        return found

    def search(self, request: Request, params: dict[str, Any]) -> Response:
        queryset = filtered(self.kind, self.queryset(), params.get("filter"))
        start = max(1, _int(params.get("startIndex"), "startIndex", 1))
        count = min(MAX_RESULTS, max(0, _int(params.get("count"), "count", MAX_RESULTS)))
        total = queryset.count()
        page = list(queryset[start - 1 : start - 1 + count]) if count else []
        rendered = [
            project(self.kind, self.render(o, request), params.get("attributes"), params.get("excludedAttributes"))
            for o in page
        ]
        return self.respond(_list(rendered, total=total, start=start))

    def shown(self, obj: Any, request: Request, status: int = 200) -> Response:
        fresh = self.one(str(obj.pk))
        data = project(
            self.kind,
            self.render(fresh, request),
            request.query_params.get("attributes"),
            request.query_params.get("excludedAttributes"),
        )
        location = data.get("meta", {}).get("location") or f"{self.base(request)}/{self.kind}s/{obj.pk}"
        return self.respond(data, status=status, location=location if status == 201 else None)


class ListView(ResourceView):
    def get(self, request: Request) -> Response:
        return self.search(request, dict(request.query_params.items()))

    def post(self, request: Request) -> Response:
        doc = services.document(self.kind, self.body(request))
        if self.kind == "User":
            obj = services.scim_user_create(actor=self.actor(request), doc=doc)
        else:
            obj = services.scim_group_create(actor=self.actor(request), doc=doc)
        return self.shown(obj, request, status=201)


class SearchView(ResourceView):
    """POST /.search (RFC 7644 §3.4.3): the query in a SearchRequest body."""

    def post(self, request: Request) -> Response:
        body = self.body(request)
        if not isinstance(body, dict):
            raise bad("The body must be a SearchRequest.", "invalidSyntax")
        schemas = key(body, "schemas")
        if not isinstance(schemas, list) or SEARCH_SCHEMA not in schemas:
            raise bad(f"schemas must list {SEARCH_SCHEMA}.", "invalidSyntax")
        params: dict[str, Any] = {}
        for name in ("filter", "startIndex", "count", "attributes", "excludedAttributes"):
            value = key(body, name)
            params[name] = ",".join(map(str, value)) if isinstance(value, list) else value
        return self.search(request, params)


class DetailView(ResourceView):
    def get(self, request: Request, pk: str) -> Response:
        return self.shown(self.one(pk), request)

    def put(self, request: Request, pk: str) -> Response:
        obj = self.one(pk)
        doc = services.document(self.kind, self.body(request))
        return self.shown(self.write(request, obj, doc), request)

    def patch(self, request: Request, pk: str) -> Response:
        obj = self.one(pk)
        current = user_document(obj) if self.kind == "User" else group_document(obj)
        doc = apply_patch(self.kind, current, self.body(request))
        return self.shown(self.write(request, obj, doc), request)

    def delete(self, request: Request, pk: str) -> Response:
        obj = self.one(pk)
        if self.kind == "User":
            services.scim_user_delete(actor=self.actor(request), user=obj)
        else:
            services.scim_group_delete(actor=self.actor(request), group=obj)
        return Response(status=204)

    def write(self, request: Request, obj: Any, doc: dict[str, Any]) -> Any:
        if self.kind == "User":
            return services.scim_user_update(actor=self.actor(request), user=obj, doc=doc)
        assert isinstance(obj, ScimGroup)
        return services.scim_group_update(actor=self.actor(request), group=obj, doc=doc)


class RootSearchView(ScimView):
    """POST /.search across every resource type at once: not supported (501, as RFC 7644 §3.12
    says for an operation a server does not offer); providers search /Users or /Groups."""

    def post(self, request: Request) -> Response:
        return error(501, "Search across resource types is not supported: POST /Users/.search or /Groups/.search.")


class NotFoundView(ScimView):
    """Anything else under /scim/v2/: a SCIM 404 (after authentication, so nothing leaks)."""

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        raise ScimError(404, "No such SCIM endpoint.")

"""Routes of /api/v1/ (and the schema and its docs under /api/)."""

from __future__ import annotations

from csp.decorators import csp_exempt
from django.http import HttpRequest, JsonResponse
from django.urls import include, path, re_path
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import DefaultRouter

from . import schema, views, views_operations, views_ops, views_row_filters, views_stewardship, views_usage

_ = schema  # registers the OpenAPI extensions

router = DefaultRouter(trailing_slash=True)
router.include_format_suffixes = False
router.register("classifications", views.ClassificationViewSet, basename="classification")
router.register("datasets", views.DatasetViewSet, basename="dataset")
router.register("column-tags", views_stewardship.ColumnTagViewSet, basename="column-tag")
router.register("row-filters", views_row_filters.RowFilterViewSet, basename="row-filter")
router.register("roles", views.RoleViewSet, basename="role")
router.register("access-requests", views.AccessRequestViewSet, basename="access-request")
router.register("grants", views.GrantViewSet, basename="grant")
router.register("provisioning-jobs", views.ProvisioningJobViewSet, basename="provisioning-job")
router.register("drift-findings", views.DriftFindingViewSet, basename="drift-finding")
router.register("sources", views_ops.DataSourceViewSet, basename="source")
router.register("effective-access", views_usage.EffectiveAccessViewSet, basename="effective-access")
router.register("operations", views_operations.OperationViewSet, basename="operation")
router.register("audit-events", views_ops.AuditEventViewSet, basename="audit-event")
router.register("tokens", views_ops.ApiTokenViewSet, basename="token")


@csrf_exempt  # it changes nothing; a POST to an unknown URL gets the 404, not a CSRF page
def not_found(request: HttpRequest, path: str = "") -> JsonResponse:
    """Any other URL under /api/: the API's own 404 envelope, not the site's HTML page."""
    return JsonResponse({"error": {"code": "not_found", "message": f"No API endpoint at {request.path}."}}, status=404)


urlpatterns = [
    path("v1/", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # Swagger UI loads its assets from a CDN with inline script: outside the portal's CSP.
    path("docs/", csp_exempt()(SpectacularSwaggerView.as_view(url_name="api-schema")), name="api-docs"),
    re_path(r"^(?P<path>.*)$", not_found),
]

"""The web portal's pages (`/portal/`)."""

from __future__ import annotations

from django.urls import path

from .views import access, access_report, catalog, dashboard, inbox, matrix, stewardship

app_name = "portal"

urlpatterns = [
    path("", catalog.catalog, name="catalog"),
    path("datasets/<int:pk>/", catalog.dataset_detail, name="dataset"),
    path("datasets/<int:pk>/request/", catalog.request_access, name="request"),
    path("datasets/<int:pk>/request/preview/", catalog.request_preview, name="request_preview"),
    path("requests/", access.my_requests, name="requests"),
    path("requests/<int:pk>/", access.request_detail, name="request_detail"),
    path("requests/<int:pk>/cancel/", access.request_cancel, name="request_cancel"),
    path("grants/", access.my_grants, name="grants"),
    path("grants/<int:pk>/relinquish/", access.grant_relinquish, name="grant_relinquish"),
    path("grants/<int:pk>/end/", access.grant_end, name="grant_end"),
    path("grants/<int:pk>/reveal/", access.grant_reveal, name="grant_reveal"),
    path("inbox/", inbox.inbox, name="inbox"),
    path("inbox/decide/", inbox.inbox_decide, name="inbox_decide"),
    path("suggestions/", stewardship.suggestions, name="suggestions"),
    path("suggestions/preview/", stewardship.suggestions_preview, name="suggestions_preview"),
    path("suggestions/decide/", stewardship.suggestions_decide, name="suggestions_decide"),
    path("matrix/", matrix.matrix, name="matrix"),
    path("dashboard/", dashboard.dashboard, name="dashboard"),
    path("access/", access_report.access_report, name="access_report"),
]

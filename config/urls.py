from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

from accounts.views import PortalLoginView, two_factor
from governance.views.slack import slack_interactive
from notifications.views import slack_command

# /healthz, /health/live, /health/ready and /metrics are answered by
# observability.middleware.ProbeMiddleware, ahead of the SSL redirect and the Host check.


admin.site.site_header = "Data access governance"
admin.site.site_title = "Data access governance"
admin.site.index_title = "Approval workbench"

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="portal:catalog", permanent=False)),
    path("portal/notifications/", include("notifications.urls")),
    path("portal/reviews/", include("reviews.urls")),
    path("portal/quality/", include("quality.urls")),
    path("portal/break-glass/", include("breakglass.urls")),
    path("portal/compliance/", include("compliance.urls")),
    path("portal/privacy/", include("privacy.urls")),
    path("portal/subjects/", include("subjects.urls")),
    path("portal/", include("governance.urls")),
    path("accounts/login/", PortalLoginView.as_view(), name="login"),
    path("accounts/two-factor/", two_factor, name="two_factor"),
    path("accounts/", include("django.contrib.auth.urls")),
    path("oidc/", include("identity.oidc.urls")),
    # Slack's signed callbacks (docs/notifications.md#slack): the buttons, and the link command.
    path("slack/interactive", slack_interactive, name="slack_interactive"),
    path("slack/commands", slack_command, name="slack_command"),
    path("admin/", admin.site.urls),
    # Before api/: governance's routes end in a catch-all 404 for any other URL under /api/.
    path("api/v1/reviews/", include("reviews.api.urls")),
    path("api/v1/quality/", include("quality.api.urls")),
    path("api/v1/policy/", include("policy.api.urls")),
    path("api/v1/break-glass/", include("breakglass.api.urls")),
    path("api/v1/compliance/", include("compliance.api_urls")),
    path("api/v1/privacy/", include("privacy.api.urls")),
    path("api/v1/", include("subjects.api.urls")),
    path("api/", include("governance.api.urls")),
    path("scim/v2/", include("identity.scim.urls")),
]

"""Routes of /portal/quality/."""

from django.urls import path

from . import views

app_name = "quality"

urlpatterns = [
    path("datasets/<int:pk>/run/", views.run_now, name="run"),
    path("datasets/<int:pk>/checks/new/", views.check_form, name="check_new"),
    path("datasets/<int:pk>/checks/<int:check_id>/", views.check_form, name="check_edit"),
    path(
        "datasets/<int:pk>/checks/<int:check_id>/delete/", views.check_action, {"action": "delete"}, name="check_delete"
    ),
    path(
        "datasets/<int:pk>/checks/<int:check_id>/review/", views.check_action, {"action": "review"}, name="check_review"
    ),
]

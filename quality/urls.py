"""Routes of /portal/quality/."""

from django.urls import path

from . import views

app_name = "quality"

urlpatterns = [
    path("datasets/<int:pk>/run/", views.run_now, name="run"),
]

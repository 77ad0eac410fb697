"""Routes of /portal/break-glass/."""

from django.urls import path

from . import views

app_name = "breakglass"

urlpatterns = [
    path("", views.use_list, name="uses"),
    path("<int:pk>/", views.use_detail, name="use"),
    path("datasets/<int:pk>/", views.activate, name="activate"),
]

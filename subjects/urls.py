"""Routes of /portal/subjects/: the officers' requests, a dataset's handling, the self-service form."""

from django.urls import path

from . import views, views_people

app_name = "subjects"

urlpatterns = [
    path("", views.request_list, name="requests"),
    path("new/", views.request_create, name="create"),
    path("<int:pk>/", views.request_detail, name="request"),
    path("<int:pk>/preview/", views.request_preview, name="preview"),
    path("<int:pk>/approve/", views.request_approve, name="approve"),
    path("<int:pk>/extend/", views.request_extend, name="extend"),
    path("<int:pk>/execute/", views.request_execute, name="execute"),
    path("<int:pk>/export/", views.request_export, name="export"),
    path("datasets/<int:pk>/handling/", views_people.dataset_handling, name="handling"),
    path("mine/", views_people.my_requests, name="mine"),
    path("mine/new/", views_people.my_request_new, name="file"),
]

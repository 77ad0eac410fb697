"""/scim/v2/ (RFC 7644 §3.2); a trailing slash is accepted, as some providers add one."""

from django.urls import re_path

from . import views

app_name = "scim"

urlpatterns = [
    re_path(r"^ServiceProviderConfig/?$", views.ServiceProviderConfigView.as_view(), name="spc"),
    re_path(r"^ResourceTypes/?$", views.ResourceTypesView.as_view(), name="resource-types"),
    re_path(r"^ResourceTypes/(?P<name>[^/]+)/?$", views.ResourceTypesView.as_view(), name="resource-type"),
    re_path(r"^Schemas/?$", views.SchemasView.as_view(), name="schemas"),
    re_path(r"^Schemas/(?P<urn>[^/]+)/?$", views.SchemasView.as_view(), name="schema"),
    re_path(r"^Users/?$", views.ListView.as_view(kind="User"), name="users"),
    re_path(r"^Users/\.search/?$", views.SearchView.as_view(kind="User"), name="users-search"),
    re_path(r"^Users/(?P<pk>[^/]+)/?$", views.DetailView.as_view(kind="User"), name="user"),
    re_path(r"^Groups/?$", views.ListView.as_view(kind="Group"), name="groups"),
    re_path(r"^Groups/\.search/?$", views.SearchView.as_view(kind="Group"), name="groups-search"),
    re_path(r"^Groups/(?P<pk>[^/]+)/?$", views.DetailView.as_view(kind="Group"), name="group"),
    re_path(r"^\.search/?$", views.RootSearchView.as_view(), name="search"),
    re_path(r"^.*$", views.NotFoundView.as_view(), name="not-found"),
]

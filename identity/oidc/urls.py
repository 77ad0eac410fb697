"""/oidc/: the redirect to the provider, its callback, and the portal's code after it."""

from django.urls import path

from .views import PortalOIDCAuthenticationRequestView, PortalOIDCCallbackView, second_factor

urlpatterns = [
    path("authenticate/", PortalOIDCAuthenticationRequestView.as_view(), name="oidc_authentication_init"),
    path("callback/", PortalOIDCCallbackView.as_view(), name="oidc_authentication_callback"),
    path("second-factor/", second_factor, name="oidc_verify"),
]

"""Local development and `make run`: DEBUG on, defaults so that nothing has to be configured."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DEBUG", default=True)
# A development-only key. Production settings refuse to start without SECRET_KEY.
SECRET_KEY = env.str("SECRET_KEY", default="dev-insecure-secret-key-for-local-use-only-0123456789")
FIELD_ENCRYPTION_KEYS = env.list(
    "FIELD_ENCRYPTION_KEYS",
    # A fixed development key so that demo data survives restarts; never used in production.
    default=["ZGV2LW9ubHktZmVybmV0LWtleS1ub3QtZm9yLXByb2Q="],
)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Static files are served from the apps by runserver/whitenoise finders in development; collectstatic
# (and STATIC_ROOT) is for production images only.
STATIC_ROOT = None  # type: ignore[assignment]
WHITENOISE_USE_FINDERS = True
# `make run`'s tour signs in to the workbench with demo passwords: the second factor is off here
# unless asked for (MFA_REQUIRED=1 make run); production settings keep it on.
MFA_REQUIRED = env.bool("MFA_REQUIRED", default=False)
# Emails are printed by the worker (and kept in Admin -> Notifications) unless a server is configured.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")

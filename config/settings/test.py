"""Settings for pytest: real PostgreSQL and Redis (from DATABASE_URL / REDIS_URL), fast hashing."""

import os
from urllib.parse import urlsplit, urlunsplit

from django.core.exceptions import ImproperlyConfigured

from .dev import *  # noqa: F403

DEBUG = False
# PostgreSQL, with a flush between transactional tests that the audit tables' TRUNCATE trigger lets
# through (config/test_database/base.py); production settings keep Django's own backend.
DATABASES = {"default": {**DATABASES["default"], "ENGINE": "config.test_database"}}  # noqa: F405
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
FIELD_ENCRYPTION_KEYS = ["dGVzdC1vbmx5LWZlcm5ldC1rZXktMDEyMzQ1Njc4OTA="]
SECURE_SSL_REDIRECT = False
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
LOGGING = {
    **LOGGING,  # noqa: F405
    "root": {"handlers": ["console"], "level": "WARNING"},
    # The SIEM stream is quiet in tests; tests/audit/test_siem.py turns it on and reads it.
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "audit.siem": {"handlers": ["siem"], "level": "WARNING", "propagate": False},
    },
}

# Tests never share a broker database with a developer's `make run` worker: their messages go to
# Redis database 15 (TEST_REDIS_DB), which the worker tests start their own worker on (and flush).
# TEST_REDIS_DB lets two test runs on one machine use separate databases. `make test` runs the
# suite in pytest-xdist workers (gw0, gw1, ...): each takes the database below the previous one
# (15, 14, ...), as each has its own test database (test_governance_gw0, ...), so that one worker's
# flush or Celery worker never sees another's messages. The Celery worker a test process starts
# inherits PYTEST_XDIST_WORKER, and so the same database.
_xdist = os.environ.get("PYTEST_XDIST_WORKER", "")
_redis_db = env.int("TEST_REDIS_DB", default=15) - (int(_xdist[2:]) if _xdist[2:].isdigit() else 0)  # noqa: F405
if _redis_db < 0:
    raise ImproperlyConfigured(f"TEST_REDIS_DB leaves no Redis database for pytest-xdist worker {_xdist}")
_redis = urlsplit(REDIS_URL)  # noqa: F405
CELERY_BROKER_URL = urlunsplit(_redis._replace(path=f"/{_redis_db}"))
# The API's throttle counters go to the tests' Redis database too.
CACHES = {"default": {**CACHES["default"], "LOCATION": CELERY_BROKER_URL}}  # noqa: F405
# The suite signs in with force_login; tests/accounts turns the second factor on (override_settings)
# and proves the admin, decisions and reveals refuse an unverified session.
MFA_REQUIRED = False
# A sync's identifier suggestions run in the session's Celery worker whenever it gets to them; their
# audit events would land among what other tests count. tests/subjects/test_suggest_after_sync.py
# turns them on.
SUBJECTS_SUGGEST_AFTER_SYNC = False

"""Settings shared by every environment, read from the environment (django-environ).

Every variable is documented in `.env.example`. Production (`config.settings.production`) refuses to
start without the secrets; dev and test give defaults that make `make run` and `make test` work.

Groups of settings live in modules of their own, imported here whole: `environment` (the reader:
`.env`, NAME_FILE secrets), `broker` (Redis, Celery, beat's schedule), `signin` (sessions, lockouts,
the second factor, OpenID Connect) and `api` (DRF, the schema, tokens, body limits). Settings
modules for an environment (`dev`, `test`, `production`) import this one.
"""

import sys
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from .environment import BASE_DIR, env

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env.str("SECRET_KEY", default="")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "accounts.admin_apps.PortalAdminConfig",  # django.contrib.admin with the second factor
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "guardian",
    "django_htmx",
    "csp",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    "axes",
    "pgtrigger",
    "pghistory",
    "pghistory.admin",
    "accounts",
    "audit",
    "governance",
    "notifications",
    "identity",
    "identity.scim",
    "reviews",
    "quality",
    "subjects",
    "breakglass",
    "policy",
    "compliance",
    "observability",
    "privacy",
]

MIDDLEWARE = [
    # First: /healthz, /health/live, /health/ready and /metrics are answered before the SSL redirect
    # and before anything reads the Host header (kubelets and Prometheus call pod IPs over HTTP).
    "observability.middleware.ProbeMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django_otp.middleware.OTPMiddleware",
    # After authentication: it snapshots the actor, IP, user agent and request id for audit.record().
    "audit.middleware.AuditContextMiddleware",
    # Inside the audit context: one log line per request with its request id and user.
    "observability.middleware.RequestLogMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last: it turns a locked-out sign-in into the lockout page.
    "axes.middleware.AxesMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": env.db_url("DATABASE_URL", default="postgres://127.0.0.1:5432/governance"),
}
# Persistent connections: a new PostgreSQL connection costs ~5 ms here (STACK.md).
DATABASES["default"]["CONN_MAX_AGE"] = env.int("DB_CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
DATABASES["default"].setdefault("TEST", {})["NAME"] = env.str("TEST_DATABASE_NAME", default="test_governance")

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_USER_MODEL = "accounts.User"

AUTHENTICATION_BACKENDS = [
    # First: it refuses a locked-out username before a password is even checked.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
    # Company sign-in (OIDC); answers only the provider's callback, and only when OIDC is configured.
    "identity.oidc.backend.PortalOIDCBackend",
    "guardian.backends.ObjectPermissionBackend",
]
# guardian: no anonymous user row; the portal has no anonymous access.
ANONYMOUS_USER_NAME = None
GUARDIAN_RAISE_403 = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 12}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Filled by `collectstatic` (the image runs it at build) and served by WhiteNoise with far-future caching.
STATIC_ROOT = Path(env.str("STATIC_ROOT", default=str(BASE_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "portal:catalog"
LOGOUT_REDIRECT_URL = "login"

# How many reverse proxies (load balancer, ingress) stand in front of the portal. With N > 0 the
# client address for the audit trail is the N-th X-Forwarded-For entry from the right and the
# proxy's X-Request-ID is kept; with 0 both headers are ignored (a client could forge them).
TRUSTED_PROXY_COUNT = env.int("TRUSTED_PROXY_COUNT", default=0)

# --- Redis / Celery (config/settings/broker.py) --------------------------------------------------
from .broker import *  # noqa: E402, F403

CELERY_TIMEZONE = TIME_ZONE

# --- Notifications (notifications/, docs/notifications.md) ----------------------------------------
# Email through Django's backend: SMTP in production (EMAIL_HOST, EMAIL_PORT, EMAIL_HOST_USER,
# EMAIL_HOST_PASSWORD, EMAIL_USE_TLS or EMAIL_USE_SSL); dev prints emails on the worker's console.
EMAIL_BACKEND = env.str("EMAIL_BACKEND", default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = env.str("EMAIL_HOST_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
EMAIL_USE_SSL = env.bool("EMAIL_USE_SSL", default=False)
# Seconds one SMTP exchange may take; below NOTIFICATIONS_LEASE_SECONDS (checked at start).
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=20)
# The sender of every notification; its domain also names the messages' Message-IDs.
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="Data access portal <noreply@localhost>")
SERVER_EMAIL = DEFAULT_FROM_EMAIL
# The address people reach the portal at: the links in emails start with it.
PORTAL_URL = env.str("PORTAL_URL", default="http://127.0.0.1:8000")
# A claimed delivery is the worker's for this long; a worker that dies mid-send loses it after it.
NOTIFICATIONS_LEASE_SECONDS = env.int("NOTIFICATIONS_LEASE_SECONDS", default=60)
# Transient send failures retry with jittered backoff from BASE, doubling up to MAX; after MAX_ATTEMPTS
# the delivery fails (audited, listed in the admin).
NOTIFICATIONS_MAX_ATTEMPTS = env.int("NOTIFICATIONS_MAX_ATTEMPTS", default=8)
NOTIFICATIONS_RETRY_BASE_SECONDS = env.float("NOTIFICATIONS_RETRY_BASE_SECONDS", default=10.0)
NOTIFICATIONS_RETRY_MAX_SECONDS = env.float("NOTIFICATIONS_RETRY_MAX_SECONDS", default=3600.0)
# An approver sent this many "waits for your decision" emails in 24 hours gets the next ones in the
# daily digest.
NOTIFICATIONS_DIGEST_AFTER = env.int("NOTIFICATIONS_DIGEST_AFTER", default=10)

# Slack (docs/notifications.md#slack): optional; without a bot token and a signing secret the
# portal sends no direct messages and refuses every request from Slack. SLACK_API_URL is the Web API
# (chat.postMessage); SLACK_HOOKS_URL_PREFIX is where team webhooks and Slack's response_url
# may point (nothing is posted elsewhere). The timeout stays below NOTIFICATIONS_LEASE_SECONDS (checked).
SLACK_BOT_TOKEN = env.str("SLACK_BOT_TOKEN", default="")
SLACK_SIGNING_SECRET = env.str("SLACK_SIGNING_SECRET", default="")
SLACK_API_URL = env.str("SLACK_API_URL", default="https://slack.com/api")
SLACK_HOOKS_URL_PREFIX = env.str("SLACK_HOOKS_URL_PREFIX", default="https://hooks.slack.com/")
SLACK_TIMEOUT_SECONDS = env.int("SLACK_TIMEOUT_SECONDS", default=10)
# How long a one-time link code (the Slack page) and a message's Approve / Deny buttons stay valid.
SLACK_LINK_CODE_SECONDS = env.int("SLACK_LINK_CODE_SECONDS", default=600)
SLACK_BUTTON_MAX_AGE_SECONDS = env.int("SLACK_BUTTON_MAX_AGE_SECONDS", default=7 * 86400)

# --- Sign-in and company sign-in with OpenID Connect (config/settings/signin.py) -----------------
from .signin import *  # noqa: E402, F403

# Content-Security-Policy (django-csp): scripts only from this origin (no inline script, no eval:
# the portal's pages and HTMX need none); inline *styles* are allowed because Django's admin uses
# style attributes. Swagger UI (/api/docs/) loads from a CDN and is exempt (governance/api/urls.py).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'", "'unsafe-inline'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    }
}

# Data source passwords by reference (governance/secrets.py): AWS Secrets Manager's region and, for a
# local endpoint, its URL; how long a resolved secret is kept in memory.
AWS_REGION = env.str("AWS_REGION", default="")
AWS_SECRETS_MANAGER_ENDPOINT_URL = env.str("AWS_SECRETS_MANAGER_ENDPOINT_URL", default="")
SECRET_CACHE_SECONDS = env.int("SECRET_CACHE_SECONDS", default=60)
# Rotation of the portal's own password on each source (governance/services/credentials.py): a
# pending rotation older than this is settled by the next one (its process died mid-way).
CREDENTIAL_ROTATION_LEASE_SECONDS = env.int("CREDENTIAL_ROTATION_LEASE_SECONDS", default=600)

# Data quality (docs/quality.md): a run's time limit on the source (every statement gets what is
# left of it), the estimated size above which fraction checks read a TABLESAMPLE of this percent,
# the default period between scheduled runs (0: on demand only), and a run's lease.
QUALITY_RUN_TIME_LIMIT_SECONDS = env.int("QUALITY_RUN_TIME_LIMIT_SECONDS", default=60)
QUALITY_SAMPLE_ABOVE_ROWS = env.int("QUALITY_SAMPLE_ABOVE_ROWS", default=1_000_000)
QUALITY_SAMPLE_PERCENT = env.float("QUALITY_SAMPLE_PERCENT", default=10.0)
QUALITY_DEFAULT_INTERVAL_MINUTES = env.int("QUALITY_DEFAULT_INTERVAL_MINUTES", default=1440)
QUALITY_RUN_LEASE_SECONDS = env.int("QUALITY_RUN_LEASE_SECONDS", default=QUALITY_RUN_TIME_LIMIT_SECONDS + 120)
# An S3 prefix's manifest (keys, ETags, sizes) is taken up to this many objects.
QUALITY_S3_MANIFEST_MAX_OBJECTS = env.int("QUALITY_S3_MANIFEST_MAX_OBJECTS", default=100_000)

# Data-subject requests (docs/subjects.md): the legal deadline (days after the request) and its one
# extension; each statement's time limit on a source; how far a dataset's count may move between the
# preview and the execution before that dataset is refused (rows); how long an export may wait.
SUBJECTS_DEADLINE_DAYS = env.int("SUBJECTS_DEADLINE_DAYS", default=30)
SUBJECTS_EXTENSION_DAYS = env.int("SUBJECTS_EXTENSION_DAYS", default=60)
SUBJECTS_STATEMENT_TIMEOUT_MS = env.int("SUBJECTS_STATEMENT_TIMEOUT_MS", default=30_000)
SUBJECTS_COUNT_TOLERANCE = env.int("SUBJECTS_COUNT_TOLERANCE", default=0)
SUBJECTS_EXPORT_DAYS = env.int("SUBJECTS_EXPORT_DAYS", default=7)
# Signed-in portal users may file a request about themselves (their account's e-mail), docs/subjects.md.
SUBJECTS_SELF_SERVICE = env.bool("SUBJECTS_SELF_SERVICE", default=False)
# An execution with no dataset finished for this long is taken as stalled (its worker died): the
# request needs attention (subjects.services.recovery). Well above a dataset's few statements.
SUBJECTS_EXECUTION_LEASE_SECONDS = env.int("SUBJECTS_EXECUTION_LEASE_SECONDS", default=3600)
# A catalog sync that changed a PostgreSQL source has a worker suggest its subject identifiers.
SUBJECTS_SUGGEST_AFTER_SYNC = env.bool("SUBJECTS_SUGGEST_AFTER_SYNC", default=True)

# Break-glass access (docs/break-glass.md): the Django group whose members may grant themselves
# access at once, and the hours within which an officer must review each use.
BREAK_GLASS_GROUP = env.str("BREAK_GLASS_GROUP", default="on-call")
BREAK_GLASS_REVIEW_HOURS = env.int("BREAK_GLASS_REVIEW_HOURS", default=24)

# The posture page fails a referenced secret (which the portal does not rotate) older than this.
COMPLIANCE_CREDENTIAL_MAX_DAYS = env.int("COMPLIANCE_CREDENTIAL_MAX_DAYS", default=90)
# vault:PATH#KEY references (governance/secrets.py) and the Vault Transit key of stored secrets:
# Vault's address, a token that may read (and, for rotated references, write) the KV version 2 mount
# and use the Transit key, and a CA bundle for Vault's TLS (empty: the system's trust store).
VAULT_ADDR = env.str("VAULT_ADDR", default="")
VAULT_TOKEN = env.str("VAULT_TOKEN", default="")
VAULT_KV_MOUNT = env.str("VAULT_KV_MOUNT", default="secret")
VAULT_CACERT = env.str("VAULT_CACERT", default="")
# vault-db: sources (governance/dynamic_credentials.py): how often each process renews its leases.
VAULT_DB_RENEW_INTERVAL_SECONDS = env.float("VAULT_DB_RENEW_INTERVAL_SECONDS", default=60.0)

# --- Audit ----------------------------------------------------------------------------------
# The key of the audit trail's MACs (audit.chain). Empty: derived from SECRET_KEY. Changing it makes
# every existing MAC unverifiable: keep it as long as the trail (see docs/security.md).
AUDIT_HMAC_KEY = env.str("AUDIT_HMAC_KEY", default="")
# The longest a transaction may hold an audit event between building and committing it. An event
# that was already older than this when the chain's head was sealed is not sealed by the sealer
# (its seal was removed, or it was slipped in): it is reported, and an operator may accept it
# (manage.py audit_accept_unsealed). Measured from the head's sealing, so a beat outage never trips it.
AUDIT_SEAL_MAX_DELAY_SECONDS = env.int("AUDIT_SEAL_MAX_DELAY_SECONDS", default=900)
# Witnesses of the chain's head outside the database (audit/anchors.py, docs/operations.md): an
# append-only JSON-lines file and/or an S3 bucket with Object Lock. `check --deploy` warns with none.
AUDIT_ANCHOR_FILE = env.str("AUDIT_ANCHOR_FILE", default="")
AUDIT_ANCHOR_S3_BUCKET = env.str("AUDIT_ANCHOR_S3_BUCKET", default="")
AUDIT_ANCHOR_S3_PREFIX = env.str("AUDIT_ANCHOR_S3_PREFIX", default="audit-anchors/")
# Days each anchor object is locked in COMPLIANCE mode (needs s3:PutObjectRetention); 0: the bucket's
# default retention applies.
AUDIT_ANCHOR_S3_RETENTION_DAYS = env.int("AUDIT_ANCHOR_S3_RETENTION_DAYS", default=0)
# Another S3 endpoint (an S3-compatible store; tests use moto's server). Empty: AWS.
AUDIT_ANCHOR_S3_ENDPOINT_URL = env.str("AUDIT_ANCHOR_S3_ENDPOINT_URL", default="")

# Monthly partitions of the audit events table created ahead of time by beat, beyond the current
# month (audit/partitions.py). An event whose month has none lands in the default partition.
AUDIT_PARTITIONS_AHEAD = env.int("AUDIT_PARTITIONS_AHEAD", default=3)

# How long the audit trail (the database and the archive files `audit_archive` writes) is kept, as
# the organisation's retention policy declares it; the posture page checks it where PHI is present.
AUDIT_RETENTION_DAYS = env.int("AUDIT_RETENTION_DAYS", default=2192)
# Archives in an S3 bucket with Object Lock (`audit_archive` without --to; audit/chain/archive_store.py,
# docs/security.md#audit): each archive and its signed checkpoint locked in COMPLIANCE mode for
# AUDIT_ARCHIVE_S3_RETENTION_DAYS (default: AUDIT_RETENTION_DAYS; 0: the bucket's default retention),
# encrypted with SSE-KMS under AUDIT_ARCHIVE_S3_KMS_KEY_ID (empty: the bucket's default encryption).
AUDIT_ARCHIVE_S3_BUCKET = env.str("AUDIT_ARCHIVE_S3_BUCKET", default="")
AUDIT_ARCHIVE_S3_PREFIX = env.str("AUDIT_ARCHIVE_S3_PREFIX", default="audit-archives/")
AUDIT_ARCHIVE_S3_RETENTION_DAYS = env.int("AUDIT_ARCHIVE_S3_RETENTION_DAYS", default=AUDIT_RETENTION_DAYS)
AUDIT_ARCHIVE_S3_KMS_KEY_ID = env.str("AUDIT_ARCHIVE_S3_KMS_KEY_ID", default="")
# Another S3 endpoint (an S3-compatible store; tests use moto's server). Empty: AWS.
AUDIT_ARCHIVE_S3_ENDPOINT_URL = env.str("AUDIT_ARCHIVE_S3_ENDPOINT_URL", default="")

# --- Compliance posture (compliance/, docs/compliance.md) -------------------------------------------
# Thresholds of the controls: the current field encryption key in use at most this long; the last
# audit verification at most this old; audit retention where PHI is present (6 years, leap days
# included); the reconciler's last read of each source's login at most this old; open drift at most
# this old; each Restricted dataset reviewed within this many days.
COMPLIANCE_KEY_ROTATION_MAX_DAYS = env.int("COMPLIANCE_KEY_ROTATION_MAX_DAYS", default=90)
COMPLIANCE_AUDIT_VERIFY_MAX_AGE_HOURS = env.int("COMPLIANCE_AUDIT_VERIFY_MAX_AGE_HOURS", default=24)
COMPLIANCE_PHI_AUDIT_RETENTION_DAYS = env.int("COMPLIANCE_PHI_AUDIT_RETENTION_DAYS", default=2192)
COMPLIANCE_LOGIN_CHECK_MAX_AGE_HOURS = env.int("COMPLIANCE_LOGIN_CHECK_MAX_AGE_HOURS", default=24)
COMPLIANCE_DRIFT_MAX_AGE_HOURS = env.int("COMPLIANCE_DRIFT_MAX_AGE_HOURS", default=24)
COMPLIANCE_REVIEW_MAX_AGE_DAYS = env.int("COMPLIANCE_REVIEW_MAX_AGE_DAYS", default=90)
# The reviews app's annotator of `last_reviewed_at` on a Dataset queryset (compliance/reviews.py).
COMPLIANCE_REVIEW_FACTS = env.str("COMPLIANCE_REVIEW_FACTS", default="reviews.selectors.annotate_last_reviewed")

# --- Governance -----------------------------------------------------------------------------
# MultiFernet keys for data source credentials, comma-separated, newest first (the first one
# encrypts; all decrypt). Generate one with `python manage.py generate_encryption_key`.
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
# Envelope encryption under an AWS KMS key (governance/envelope.py, docs/security.md#key-management):
# the key's id, ARN or alias (alias/NAME: the alias can move to a new key, then `rewrap_secrets`).
# Empty: the MultiFernet keys above encrypt. Region AWS_REGION; another endpoint (a local KMS) in
# AWS_KMS_ENDPOINT_URL. Unwrapped data keys stay in memory at most this long, this many at most.
FIELD_ENCRYPTION_KMS_KEY_ID = env.str("FIELD_ENCRYPTION_KMS_KEY_ID", default="")
AWS_KMS_ENDPOINT_URL = env.str("AWS_KMS_ENDPOINT_URL", default="")
# Or under a HashiCorp Vault Transit key (governance/envelope/vault_transit.py): its name, on the
# mount VAULT_TRANSIT_MOUNT, at VAULT_ADDR with VAULT_TOKEN (VAULT_CACERT). Not both with KMS.
FIELD_ENCRYPTION_VAULT_TRANSIT_KEY = env.str("FIELD_ENCRYPTION_VAULT_TRANSIT_KEY", default="")
VAULT_TRANSIT_MOUNT = env.str("VAULT_TRANSIT_MOUNT", default="transit")
FIELD_ENCRYPTION_DATA_KEY_CACHE_SECONDS = env.float("FIELD_ENCRYPTION_DATA_KEY_CACHE_SECONDS", default=300.0)
FIELD_ENCRYPTION_DATA_KEY_CACHE_SIZE = env.int("FIELD_ENCRYPTION_DATA_KEY_CACHE_SIZE", default=1000)
# A pending access request older than this is expired by the scheduled job.
ACCESS_REQUEST_PENDING_MAX_AGE_DAYS = env.int("ACCESS_REQUEST_PENDING_MAX_AGE_DAYS", default=14)
# Last-used facts (docs/usage.md): a grant in force for this long with no use seen for this long is
# flagged as unused, and revoking it is suggested.
USAGE_UNUSED_DAYS = env.int("USAGE_UNUSED_DAYS", default=90)
# Durations of access (governance/durations.py): no policy or request says less than this floor.
# Tests lower it to watch a grant of a few seconds end on the target.
GRANT_MIN_DURATION_FLOOR_SECONDS = env.int("GRANT_MIN_DURATION_FLOOR_SECONDS", default=3600)
# A grant's end gets its own revocation task (ETA = the end) once the end is this close. It must stay
# below the broker's visibility timeout, or Redis delivers the waiting message again (checked at start).
GRANT_END_HORIZON_SECONDS = env.int("GRANT_END_HORIZON_SECONDS", default=180)
# Provisioning retries (docs/provisioning.md, "Failures, retries, revocation"). A transient target
# error (lock timeout, serialisation failure, throttling) is retried with exponential backoff and
# full jitter from RETRY_BASE, capped at RETRY_MAX, for as long as the job's work is wanted (an
# apply while its grant is not revoked or ended; revocations and memberships always). MAX_ATTEMPTS
# is when a job still failing is flagged as *stalled* to operators (audited once, logged, the admin's
# "stalled" filter); it keeps retrying at the capped interval. A source that does not answer at
# all spends no attempts: its jobs wait for it (below).
PROVISIONING_MAX_ATTEMPTS = env.int("PROVISIONING_MAX_ATTEMPTS", default=5)
PROVISIONING_RETRY_BASE_SECONDS = env.float("PROVISIONING_RETRY_BASE_SECONDS", default=1.0)
PROVISIONING_RETRY_MAX_SECONDS = env.float("PROVISIONING_RETRY_MAX_SECONDS", default=300.0)
# A queued job whose message was sent this long ago is published again by the sweeper (the message
# was lost: Redis flushed, or taken by a worker that died before acknowledging it). Each further
# duplicate of the same message waits as long as the job had already waited, plus this (30, 60,
# 120, 240, 480 s...), never more than REPUBLISH_MAX: a legitimate backlog of N minutes costs each
# job a handful of duplicates, not one every 30 s.
PROVISIONING_STUCK_AFTER_SECONDS = env.int("PROVISIONING_STUCK_AFTER_SECONDS", default=30)
PROVISIONING_REPUBLISH_MAX_SECONDS = env.int("PROVISIONING_REPUBLISH_MAX_SECONDS", default=600)
# A running job's lease: set at claim, renewed every quarter of it by the worker process's heartbeat
# thread (database clock). A worker that dies stops renewing; past the lease its job is queued again
# by the sweeper. Recovery of a killed worker's job: about LEASE + PROVISIONING_SWEEP_INTERVAL_SECONDS.
PROVISIONING_LEASE_SECONDS = env.float("PROVISIONING_LEASE_SECONDS", default=20.0)
# Long operations (catalog sync, reconcile started from the admin or the API; docs/operations.md):
# a running one whose worker stopped renewing its heartbeat for LEASE seconds, or one that no worker
# took within QUEUED_MAX seconds, is failed by the sweeper (never left running forever).
OPERATION_LEASE_SECONDS = env.float("OPERATION_LEASE_SECONDS", default=60.0)
OPERATION_QUEUED_MAX_SECONDS = env.int("OPERATION_QUEUED_MAX_SECONDS", default=3600)
# Source health (governance/services/source_health.py): how often unreachable sources are probed,
# and how long one probe may wait for an answer (PostgreSQL counts whole seconds, at least 2).
PROVISIONING_PROBE_INTERVAL_SECONDS = env.float("PROVISIONING_PROBE_INTERVAL_SECONDS", default=2.0)
PROVISIONING_PROBE_TIMEOUT_SECONDS = env.float("PROVISIONING_PROBE_TIMEOUT_SECONDS", default=3.0)
# Bulk applies (see governance.services.engine): one commit that queues at least
# BATCH_MIN plain applies on one source sends them in batches of up to BATCH_SIZE per message.
PROVISIONING_BATCH_MIN = env.int("PROVISIONING_BATCH_MIN", default=10)
PROVISIONING_BATCH_SIZE = env.int("PROVISIONING_BATCH_SIZE", default=500)
# A revocation still not done after this long is an incident: logged as an error on every sweep.
REVOCATION_OVERDUE_SECONDS = env.int("REVOCATION_OVERDUE_SECONDS", default=900)
# Catalog sync: how many rows per column are sampled for PII discovery (0 disables sampling).
PII_SAMPLE_ROWS = env.int("PII_SAMPLE_ROWS", default=200)
# Columns without any PII tag are sampled again at most this often (undecided suggestions: every
# sync); 0 = every sync. Bounds the cost of scheduled syncs on a large warehouse (docs/model.md).
PII_RESAMPLE_UNTAGGED_SECONDS = env.int("PII_RESAMPLE_UNTAGGED_SECONDS", default=86_400)
# S3 prefixes of AWS sources (governance/catalog/s3_sample.py): the newest S3_SAMPLE_OBJECTS objects
# among the first S3_SAMPLE_MAX_LISTED keys, S3_SAMPLE_BYTES read from each (ranged GETs; Parquet:
# the footer and the first row group, only when it fits), PII_SAMPLE_ROWS rows in all.
S3_SAMPLE_OBJECTS = env.int("S3_SAMPLE_OBJECTS", default=5)
S3_SAMPLE_BYTES = env.int("S3_SAMPLE_BYTES", default=1_048_576)
S3_SAMPLE_MAX_LISTED = env.int("S3_SAMPLE_MAX_LISTED", default=1000)
# Connect timeout (seconds) to target databases.
TARGET_CONNECT_TIMEOUT = env.int("TARGET_CONNECT_TIMEOUT", default=5)
# Statement and lock timeouts (milliseconds) for every session the portal opens on a target.
TARGET_STATEMENT_TIMEOUT_MS = env.int("TARGET_STATEMENT_TIMEOUT_MS", default=30000)
TARGET_LOCK_TIMEOUT_MS = env.int("TARGET_LOCK_TIMEOUT_MS", default=5000)
# How long ending a session on revocation waits for it to exit (pg_terminate_backend's timeout).
TARGET_TERMINATE_WAIT_MS = env.int("TARGET_TERMINATE_WAIT_MS", default=5000)
# Share of sampled non-empty values that must match a detector before a PII tag is suggested.
PII_MATCH_THRESHOLD = env.float("PII_MATCH_THRESHOLD", default=0.6)
# Regions (ISO 3166 codes) whose national phone formats count without +/00; empty: US GB DE FR NL ES IT.
PII_PHONE_REGIONS = env.list("PII_PHONE_REGIONS", default=[])

_SIEM_FILE = env.str("AUDIT_SIEM_LOG_FILE", default="")


def _siem_stream(argv: list[str]) -> str:
    """Where the SIEM lines go without AUDIT_SIEM_LOG_FILE: the servers' standard output (runserver,
    gunicorn, the Celery worker), but a management command's standard error. A command's standard
    output is its result, which scripts capture (`TOKEN=$(manage.py api_token create ...)`): the
    audit line of the token it just issued must not end up in the token. Logs go to standard error
    everywhere (the root handler below)."""
    program = Path(argv[0]) if argv else Path()
    # manage.py, django-admin, python -m django
    command_line = program.name in {"manage.py", "django-admin"} or program.parts[-2:] == ("django", "__main__.py")
    return "ext://sys.stderr" if command_line and argv[1:2] != ["runserver"] else "ext://sys.stdout"


# Application and worker logs on standard error: `plain` text, or `json` (one object per line with the
# request id, user id and Celery task id: observability/logs.py; production's default).
LOG_FORMAT = env.str("LOG_FORMAT", default="plain")
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured("LOG_FORMAT must be plain or json.")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "observability.logs.JsonFormatter"},
        "json_line": {"format": "%(message)s"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT},
        # One JSON object per line: every committed audit event (audit/siem.py). To a file with
        # AUDIT_SIEM_LOG_FILE, else the servers' standard output (a management command's standard
        # error: its standard output is its result); ship it with the log agent (docs/operations.md).
        "siem": (
            {"class": "logging.handlers.WatchedFileHandler", "filename": _SIEM_FILE, "formatter": "json_line"}
            if _SIEM_FILE
            else {"class": "logging.StreamHandler", "stream": _siem_stream(sys.argv), "formatter": "json_line"}
        ),
    },
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "audit.siem": {"handlers": ["siem"], "level": "INFO", "propagate": False},
    },
}


# --- Differentially private aggregates (privacy/, docs/privacy.md) --------------------------------
# The budget (epsilon) an approver gives an aggregate grant when they set none, and the most they may set.
PRIVACY_DEFAULT_EPSILON = env.float("PRIVACY_DEFAULT_EPSILON", default=1.0)
PRIVACY_MAX_EPSILON = env.float("PRIVACY_MAX_EPSILON", default=10.0)
# Each aggregate query runs on the source in a read-only transaction with this statement_timeout.
PRIVACY_QUERY_TIMEOUT_MS = env.int("PRIVACY_QUERY_TIMEOUT_MS", default=30000)


# --- Health and metrics (observability/, docs/operations.md) ----------------------------------------
# Bearer token for /metrics and for the details of /health/ready; without it /metrics answers only
# a DEBUG server (403 in production).
METRICS_TOKEN = env.str("METRICS_TOKEN", default="")
# How long the readiness checks wait for Redis and for a Celery worker's answer to a ping.
HEALTH_CHECK_TIMEOUT_SECONDS = env.float("HEALTH_CHECK_TIMEOUT_SECONDS", default=2.0)
# The readiness check `beat` fails when beat's heartbeat is older than this.
HEALTH_BEAT_MAX_AGE_SECONDS = env.int("HEALTH_BEAT_MAX_AGE_SECONDS", default=300)
# A Celery worker's own /metrics (observability/exporter.py): the port its main process listens on
# (0: none) and the address (empty: every interface), with the same METRICS_TOKEN.
WORKER_METRICS_PORT = env.int("WORKER_METRICS_PORT", default=0)
WORKER_METRICS_ADDRESS = env.str("WORKER_METRICS_ADDRESS", default="")


# --- REST API (config/settings/api.py) ------------------------------------------------------------
from .api import *  # noqa: E402, F403

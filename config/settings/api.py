"""The REST API (governance/api, docs/api.md): the cache its throttling counts in, DRF, the schema,
tokens and the limits on request bodies (config/settings/base.py imports it)."""

from .broker import REDIS_URL
from .environment import env

# Throttling counts live in this cache (shared by every web process), keyed by token or user.
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": env.str("CACHE_URL", default=REDIS_URL),
        "KEY_PREFIX": "gov",
    }
}
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "governance.api.permissions.TokenScopes",
        "governance.api.permissions.ReadOnlyForAuditors",
    ],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "governance.api.filters.StrictOrderingFilter",
    ],
    "DEFAULT_PAGINATION_CLASS": "governance.api.pagination.PageNumberPagination",
    "DEFAULT_THROTTLE_CLASSES": ["governance.api.throttling.PerTokenThrottle"],
    "DEFAULT_THROTTLE_RATES": {"token": env.str("API_THROTTLE_RATE", default="6000/min")},
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["governance.api.parsers.JSONParser"],
    "EXCEPTION_HANDLER": "governance.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "governance.api.schema.GovernanceAutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # `?format=` is ours (the audit export's jsonl/csv), not DRF's renderer switch: JSON only.
    "URL_FORMAT_OVERRIDE": None,
    # No OPTIONS metadata (the schema at /api/schema/ describes every operation).
    "DEFAULT_METADATA_CLASS": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Data access governance API",
    "DESCRIPTION": "Requests, approvals, grants, provisioning and audit. See docs/api.md.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "ApprovalStageEnum": "governance.models.catalog.ApprovalStage",
        "DatasetKindEnum": "governance.models.catalog.DatasetKind",
        "SourceKindEnum": "governance.models.catalog.SourceKind",
        "RoleKindEnum": "governance.models.roles.RoleKind",
        "DriftKindEnum": "governance.models.drift.DriftKind",
        "GrantStatusEnum": "governance.models.grants.GrantStatus",
        "JobStatusEnum": "governance.models.provisioning.JobStatus",
        "RequestStateEnum": "governance.models.requests.RequestState",
        "ReviewDecisionEnum": "reviews.models.Decision",
        "ReviewVerdictEnum": ["keep", "revoke", "shorten"],
        "QualityCheckKindEnum": "quality.models.Kind",
        "QualityCheckStatusEnum": "quality.models.CheckStatus",
        "QualityStatusEnum": "quality.models.QualityStatus",
        "QualityTriggerEnum": "quality.models.Trigger",
        "PrivacyQueryKindEnum": "privacy.models.QueryKind",
        # PII tags and subject identifiers share their statuses (suggested, confirmed, rejected).
        "ColumnTagStatusEnum": "governance.models.catalog.TagStatus",
        "SubjectRequestKindEnum": "subjects.models.RequestKind",
        "SubjectRequestStateEnum": "subjects.models.RequestState",
        "SubjectHandlingActionEnum": "subjects.models.HandlingAction",
        "SubjectLegalBasisEnum": "subjects.models.LegalBasis",
        "SubjectDatasetOutcomeEnum": "subjects.models.DatasetOutcome",
        "BreakGlassOutcomeEnum": "breakglass.models.Outcome",
    },
}
API_TOKEN_DEFAULT_DAYS = env.int("API_TOKEN_DEFAULT_DAYS", default=90)
API_TOKEN_MAX_DAYS = env.int("API_TOKEN_MAX_DAYS", default=365)
IDEMPOTENCY_TTL_HOURS = env.int("IDEMPOTENCY_TTL_HOURS", default=24)
# Deepest nesting of arrays and objects a JSON body may have (deeper: 400, governance/api/parsers.py).
API_JSON_MAX_DEPTH = env.int("API_JSON_MAX_DEPTH", default=32)
# Longest request body the API reads, in bytes (longer: 413, governance/api/parsers.py). DRF reads the
# stream itself: Django's DATA_UPLOAD_MAX_MEMORY_SIZE does not bound it.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=2 * 1024 * 1024)

#!/bin/sh
# The production image's commands (docs/deploy.md). One image, one command per process:
#
#   web        gunicorn with config/gunicorn.conf.py (the default)
#   worker     a Celery worker on the provisioning and notification queues (as many as you like);
#              its own /metrics on WORKER_METRICS_PORT when set
#   beat       Celery beat, the scheduler: run EXACTLY ONE (two would send every periodic task twice)
#   migrate    apply the database migrations, then exit (a one-shot job before a rollout)
#   collectstatic   gather the static files into STATIC_ROOT (run at image build)
#   manage ARGS     any manage.py command, e.g. `manage createsuperuser`
#   healthcheck     the image's HEALTHCHECK: probes whichever of web, worker or beat runs here
#
# Anything else is executed as given (the development compose file runs its own shell command).
# Settings are production unless DJANGO_SETTINGS_MODULE says otherwise; any setting may come from a
# file instead of the environment: NAME_FILE=/run/secrets/name (config/settings/environment.py).
set -eu

APP_DIR=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
cd "$APP_DIR"
: "${DJANGO_SETTINGS_MODULE:=config.settings.production}"
export DJANGO_SETTINGS_MODULE
# Where the process notes what it is (for healthcheck) and beat keeps its schedule: writable even on
# a read-only root filesystem (a tmpfs or an emptyDir on /tmp).
RUN_DIR=${PORTAL_RUN_DIR:-${TMPDIR:-/tmp}}
PYTHON=${PYTHON:-python}

remember() {
    printf '%s\n' "$1" >"$RUN_DIR/portal-process"
}

# prometheus-client's multiprocess mode for this container's processes (gunicorn's workers, the
# Celery worker's prefork children; docs/operations.md#metrics): a directory of their own, emptied
# at start, unless PROMETHEUS_MULTIPROC_DIR already names one (then emptying it is the operator's).
metrics_dir() {
    if [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
        PROMETHEUS_MULTIPROC_DIR="$RUN_DIR/prometheus-$1"
        rm -rf "$PROMETHEUS_MULTIPROC_DIR"
        mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
        export PROMETHEUS_MULTIPROC_DIR
    fi
}

# With stored secrets under a KMS key (FIELD_ENCRYPTION_KMS_KEY_ID) a process that cannot use the key
# would fail at its first secret: web and worker refuse to start instead, with KMS's answer.
kms_usable() {
    if [ -n "${FIELD_ENCRYPTION_KMS_KEY_ID:-}" ]; then
        "$PYTHON" manage.py check --deploy --tag kms --fail-level ERROR >/dev/null
    fi
}

command=${1:-web}
if [ "$#" -gt 0 ]; then
    shift
fi

case "$command" in
web)
    remember web
    kms_usable
    metrics_dir web
    exec gunicorn --config config/gunicorn.conf.py config.wsgi:application "$@"
    ;;
worker)
    remember worker
    kms_usable
    # With WORKER_METRICS_PORT set the worker serves what it observes on that port (/metrics, the
    # same METRICS_TOKEN): web and worker containers share no metrics files.
    metrics_dir worker
    exec celery -A config worker \
        --hostname "worker@%h" \
        --queues "${CELERY_QUEUES:-celery,notifications}" \
        --concurrency "${CELERY_CONCURRENCY:-2}" \
        --loglevel "${CELERY_LOG_LEVEL:-INFO}" \
        "$@"
    ;;
beat)
    remember beat
    exec celery -A config beat \
        --loglevel "${CELERY_LOG_LEVEL:-INFO}" \
        --schedule "$RUN_DIR/celerybeat-schedule" \
        "$@"
    ;;
migrate)
    exec "$PYTHON" manage.py migrate --noinput "$@"
    ;;
collectstatic)
    exec "$PYTHON" manage.py collectstatic --noinput "$@"
    ;;
manage)
    exec "$PYTHON" manage.py "$@"
    ;;
healthcheck)
    process=$(cat "$RUN_DIR/portal-process" 2>/dev/null || echo none)
    case "$process" in
    web)
        # The health path answers before the host check and the HTTPS redirect (config/middleware.py).
        exec "$PYTHON" -c 'import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
    sys.exit(0 if response.status == 200 else 1)' "${HEALTHCHECK_URL:-http://127.0.0.1:${PORT:-8000}/healthz}"
        ;;
    worker)
        # This container's worker answers a ping through the broker.
        exec celery -A config inspect ping --timeout 5 --destination "worker@${HOSTNAME:-$(hostname)}"
        ;;
    beat)
        # Beat writes its schedule file at least every 3 minutes while it sends tasks.
        fresh=$(find "$RUN_DIR" -maxdepth 1 -name 'celerybeat-schedule*' -mmin "-${BEAT_HEALTH_MAX_AGE_MINUTES:-10}" | head -n 1)
        [ -n "$fresh" ] || { echo "beat has not written its schedule for ${BEAT_HEALTH_MAX_AGE_MINUTES:-10} minutes" >&2; exit 1; }
        ;;
    *)
        echo "healthcheck: no web, worker or beat process started in this container" >&2
        exit 1
        ;;
    esac
    ;;
*)
    exec "$command" "$@"
    ;;
esac

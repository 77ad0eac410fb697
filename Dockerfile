# syntax=docker/dockerfile:1
# The portal's production image (docs/deploy.md). One image, one command per process, given as the
# container's command: web (the default), worker, beat (exactly one), migrate (a one-shot job),
# manage ARGS. Production settings; the secrets come from the environment or from NAME_FILE files.
#
#   docker build -t data-access-governance .
#   docker compose -f docker-compose.prod.yml up      (the example with every process)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: the dependencies from the hashed lock, into a virtualenv copied whole into the image ----
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
# Only the production lock: no test or lint tool, no embedded PostgreSQL or Redis (the dev extras).
# --require-hashes: every file is checked against the hash the lock recorded; wheels only, so that
# nothing is compiled here.
COPY requirements/production.txt /tmp/production.txt
RUN /opt/venv/bin/pip install --require-hashes --only-binary=:all: -r /tmp/production.txt

# --- runtime ---------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# Pango for weasyprint (the PDF exports, compliance/pdf.py): the slim image has no text layout
# library. Versions are Debian's stable security updates for the base image (.hadolint.yaml).
# A numeric user and group (Kubernetes' runAsNonRoot can check a number, not a name), without a
# home or a shell. The code stays root's and read-only to it; it may write only /tmp and the
# audit anchors' directory (a volume).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin app \
    && mkdir -p /var/lib/governance \
    && chown 10001:10001 /var/lib/governance

COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings.production \
    STATIC_ROOT=/app/staticfiles \
    XDG_CACHE_HOME=/tmp/.cache \
    PORT=8000

WORKDIR /app
COPY . .

# The static files, gathered and compressed once here (WhiteNoise serves them with their hashed
# names). Production settings refuse to load without these three; collectstatic uses none of them,
# so throwaway values do: the real ones are the container's at run time.
RUN SECRET_KEY=collectstatic-only FIELD_ENCRYPTION_KEYS=collectstatic-only ALLOWED_HOSTS=localhost \
    /app/docker/entrypoint.sh collectstatic

USER 10001:10001
EXPOSE 8000
# Probes whichever process runs here: the web server's /healthz, the worker's ping, beat's schedule.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["/app/docker/entrypoint.sh", "healthcheck"]
ENTRYPOINT ["/app/docker/entrypoint.sh"]
CMD ["web"]

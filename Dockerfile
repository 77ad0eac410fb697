# The portal's image for docker-compose.yml (web and worker). Development settings by default;
# production sets DJANGO_SETTINGS_MODULE=config.settings.production and its secrets (.env.example).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Pango for weasyprint (the PDF exports, compliance/pdf.py): the slim image has no text layout library.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libpango-1.0-0 libpangoft2-1.0-0 fonts-dejavu-core \
    && rm -rf /var/lib/apt/lists/*

# Dependencies first, so that code changes do not reinstall them (pyproject.toml lists no packages:
# `pip install .` installs the pinned dependencies; the code runs from /app).
COPY pyproject.toml README.md* ./
RUN pip install .

COPY . .

# Never run the portal as root.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
USER app

EXPOSE 8000
CMD ["python", "manage.py", "runserver", "0.0.0.0:8000", "--noreload"]

"""Settings of the web server the API benchmark starts: the test settings plus the floor views."""

from config.settings.test import *  # noqa: F403

ROOT_URLCONF = "bench.urls"

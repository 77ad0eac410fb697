from typing import Any

from django.core.management.base import BaseCommand

from audit.context import cli_context
from governance.services.requests import access_requests_expire_stale


class Command(BaseCommand):
    help = "Expire pending access requests older than ACCESS_REQUEST_PENDING_MAX_AGE_DAYS (the beat job does this too)."

    def handle(self, *args: Any, **options: Any) -> None:
        with cli_context("expire_stale_requests"):
            count = access_requests_expire_stale()
        self.stdout.write(f"{count} stale request(s) expired.")

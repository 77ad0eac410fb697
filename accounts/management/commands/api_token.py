"""`manage.py api_token create USERNAME --scopes read,request [--expires-in 30d] [--name TEXT]` prints
only the token (so it can be captured: `TOKEN=$(manage.py api_token create ...)`);
`api_token list [USERNAME]`; `api_token revoke KEY_ID [--reason TEXT]`. Each change is audited."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import ApiToken, User
from accounts.tokens import api_token_create, api_token_revoke, parse_duration
from audit.context import cli_context
from governance.errors import DomainError


class Command(BaseCommand):
    help = "Create, list and revoke API tokens."

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        create = sub.add_parser("create", help="Issue a token and print it (shown once).")
        create.add_argument("username")
        create.add_argument("--scopes", required=True, help="Comma-separated: read, request, approve, admin, scim.")
        create.add_argument("--expires-in", default=None, help="e.g. 30d, 12h (default API_TOKEN_DEFAULT_DAYS).")
        create.add_argument("--name", default="", help="What the token is for.")
        listing = sub.add_parser("list", help="Tokens (never their secrets).")
        listing.add_argument("username", nargs="?")
        revoke = sub.add_parser("revoke", help="Revoke a token by its key id.")
        revoke.add_argument("key_id")
        revoke.add_argument("--reason", default="")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        with cli_context(f"api_token {action}"):
            try:
                if action == "create":
                    self._create(options)
                elif action == "list":
                    self._list(options.get("username"))
                else:
                    self._revoke(options["key_id"], options["reason"])
            except DomainError as exc:
                raise CommandError(exc.message) from None

    def _create(self, options: dict[str, Any]) -> None:
        user = User.objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"No user {options['username']!r}.")
        expires_in = parse_duration(options["expires_in"]) if options["expires_in"] else None
        issued = api_token_create(user=user, scopes=options["scopes"], name=options["name"], expires_in=expires_in)
        self.stdout.write(issued.secret)

    def _list(self, username: str | None) -> None:
        tokens = ApiToken.objects.select_related("user").order_by("user__username", "-created_at")
        if username:
            tokens = tokens.filter(user__username=username)
        for t in tokens:
            state = "revoked" if t.revoked_at else f"expires {t.expires_at:%Y-%m-%d %H:%M}"
            used = f"last used {t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never used"
            self.stdout.write(f"{t.key_id}  {t.user.username:<20} {','.join(t.scopes):<28} {state}; {used}; {t.name}")

    def _revoke(self, key_id: str, reason: str) -> None:
        token = ApiToken.objects.filter(key_id=key_id).first()
        if token is None:
            raise CommandError(f"No token with key id {key_id!r}.")
        api_token_revoke(token=token, actor=None, reason=reason)
        self.stdout.write(f"revoked {key_id}")

"""The provider's claims, checked and normalised before anything is written.

A broken or hostile provider (or a user who edits their own profile at the provider) may send any
JSON. The subject must be a sensible string or the sign-in is refused; every other claim is taken
only when it has the expected type and shape, and dropped (left empty) otherwise.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from governance.errors import NotPermitted

NAME_MAX = 150  # AbstractUser.first_name / last_name / username
SUBJECT_MAX = 255
GROUPS_MAX = 1000
USERNAME_UNSAFE = re.compile(r"[^\w.@+-]", re.ASCII)


class SignInRefused(NotPermitted):
    """The sign-in is refused; the message is shown on the login page and kept in the audit trail."""


@dataclass(frozen=True)
class Claims:
    issuer: str
    subject: str
    email: str = ""
    first_name: str = ""
    last_name: str = ""
    username_hint: str = ""
    groups: list[str] = field(default_factory=list)
    mfa: bool = False
    # The ID token's value of OIDC_SCIM_MATCH_CLAIM: a first sign-in adopts the account SCIM made
    # with this externalId (services.py).
    scim_key: str = ""


def _text(value: Any, limit: int) -> str:
    """A printable one-line string of at most `limit` characters, or ''."""
    if not isinstance(value, str):
        return ""
    cleaned = "".join(ch for ch in value if unicodedata.category(ch)[0] != "C").strip()
    return cleaned[:limit]


def _email(value: Any) -> str:
    text = _text(value, 254)
    try:
        validate_email(text)
    except ValidationError:
        return ""
    return text


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [v for v in value[:GROUPS_MAX] if isinstance(v, str) and 0 < len(v) <= 255]


def mfa_asserted(id_token: Mapping[str, Any]) -> bool:
    """The provider says a second factor was used: an `amr` value, or the `acr`, is one of the
    configured ones. Only the ID token counts (signed, for this sign-in), never userinfo."""
    amr = set(_strings(id_token.get("amr")))
    acr = id_token.get("acr")
    return bool(amr & set(settings.OIDC_MFA_AMR_VALUES)) or (
        isinstance(acr, str) and acr in set(settings.OIDC_MFA_ACR_VALUES)
    )


def parse(*, id_token: Mapping[str, Any], userinfo: Mapping[str, Any]) -> Claims:
    """The sign-in's claims: identity from the (verified) ID token, profile and groups from userinfo
    with the ID token's as a fallback (providers differ on where they put them)."""
    subject = id_token.get("sub")
    if not isinstance(subject, str) or not subject.strip() or len(subject) > SUBJECT_MAX:
        raise SignInRefused("The identity provider sent no usable subject (sub).")
    if _text(subject, SUBJECT_MAX) != subject:
        raise SignInRefused("The identity provider sent a subject (sub) with control characters.")
    if "sub" in userinfo and userinfo.get("sub") != subject:
        # OpenID Connect Core 5.3.2: userinfo for another subject must not be used.
        raise SignInRefused("The identity provider's userinfo is for another subject.")
    issuer = id_token.get("iss")
    merged = {**id_token, **userinfo}
    groups_claim = settings.OIDC_GROUPS_CLAIM
    groups = userinfo.get(groups_claim, id_token.get(groups_claim))
    return Claims(
        issuer=issuer if isinstance(issuer, str) else "",
        subject=subject,
        email=_email(merged.get("email")),
        first_name=_text(merged.get("given_name"), NAME_MAX),
        last_name=_text(merged.get("family_name"), NAME_MAX),
        username_hint=_text(merged.get("preferred_username"), NAME_MAX),
        groups=_strings(groups),
        mfa=mfa_asserted(id_token),
        scim_key=_text(id_token.get(settings.OIDC_SCIM_MATCH_CLAIM), SUBJECT_MAX)
        if settings.OIDC_SCIM_MATCH_CLAIM
        else "",
    )


def username_candidates(claims: Claims) -> Iterable[str]:
    """Usernames to try for a new account, best first: preferred_username made safe for Django's
    username rules, else the email's local part, else one derived from the subject; then the same
    with a suffix derived from the subject (a username already taken is never reused)."""
    hint = claims.username_hint or claims.email.split("@")[0]
    base = USERNAME_UNSAFE.sub("", hint.replace(" ", "."))[:NAME_MAX].strip(".")
    digest = hashlib.sha256(f"{claims.issuer}\n{claims.subject}".encode()).hexdigest()
    if base:
        yield base
    else:
        base = "user"
    for size in (8, 16, 64):
        yield f"{base[: NAME_MAX - size - 1]}-{digest[:size]}"

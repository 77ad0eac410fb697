"""The portal's client of HashiCorp Vault (hvac), shared by `vault:` password references
(governance.secrets, KV version 2) and the Vault Transit key of stored secrets (governance.envelope):
`VAULT_ADDR`, `VAULT_TOKEN`, `VAULT_CACERT` (a CA bundle for Vault's TLS; empty: the system's)."""

from __future__ import annotations

from typing import Any

from django.conf import settings


def configured() -> bool:
    return bool(getattr(settings, "VAULT_ADDR", "") and getattr(settings, "VAULT_TOKEN", ""))


def client() -> Any:
    import hvac

    return hvac.Client(
        url=settings.VAULT_ADDR,
        token=settings.VAULT_TOKEN,
        verify=getattr(settings, "VAULT_CACERT", "") or True,
        timeout=10,
    )


def errors_of(exc: Exception) -> str:
    """What Vault said (its `errors` list), else the kind of failure: never a value, never a token."""
    said = [str(e).replace("1 error occurred:", "").strip(" \n\t*") for e in (getattr(exc, "errors", None) or [])]
    text = "; ".join(s for s in said if s)
    return text[:300] if text else type(exc).__name__

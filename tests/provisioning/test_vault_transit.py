"""Envelope encryption of stored secrets under a Vault Transit key (governance/envelope/vault_transit.py),
against the stand-in of Vault's HTTP API (tests/vault.py: no Vault server installs on this machine;
hvac, the real client, talks HTTP to it) and the real TLS target PostgreSQL (tests/tls_target.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import hvac
import pytest
from cryptography.fernet import InvalidToken
from django.core.management import call_command
from django.core.management.base import SystemCheckError
from rest_framework.test import APIClient

from accounts.tokens import api_token_create
from audit.models import AuditEvent
from governance import crypto, envelope
from governance.catalog.sync import SyncFailed, read_source
from governance.errors import Unavailable
from governance.models import DataSource
from governance.services.catalog import datasource_update
from tests import tls_target
from tests.aws import free_port
from tests.provisioning.test_kms import connects, keys_control, local_keys_only, rewrap
from tests.vault import Vault, vault_server  # noqa: F401 - the stand-in Vault, a fixture

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "portal-secrets"


@pytest.fixture
def transit(vault_server: Vault, settings: Any) -> Iterator[Vault]:  # noqa: F811 - the fixture imported above
    """A Transit key KEY in the stand-in Vault, the portal configured to seal secrets under it."""
    vault_server.create_key(KEY)
    settings.VAULT_ADDR, settings.VAULT_TOKEN = vault_server.url, vault_server.token
    settings.FIELD_ENCRYPTION_KMS_KEY_ID = ""
    settings.FIELD_ENCRYPTION_VAULT_TRANSIT_KEY = KEY
    settings.VAULT_TRANSIT_MOUNT = "transit"
    settings.FIELD_ENCRYPTION_DATA_KEY_CACHE_SECONDS = 300
    settings.FIELD_ENCRYPTION_DATA_KEY_CACHE_SIZE = 1000
    crypto.clear_key_cache()
    yield vault_server
    crypto.clear_key_cache()


def operator(vault: Vault) -> Any:
    """What an operator runs with their own token (`vault write -f transit/keys/NAME/rotate`, ...)."""
    return hvac.Client(url=vault.url, token=vault.token).secrets.transit


def stored(source: DataSource) -> str:
    return DataSource.objects.get(pk=source.pk).password_encrypted


def test_with_transit_no_secret_opens_without_vault_and_a_key_rotation_rewraps_inside_vault(
    target_source: DataSource, transit: Vault
) -> None:
    cluster = tls_target.current()
    assert not envelope.is_envelope(stored(target_source))  # stored before: a MultiFernet token, still read
    assert connects(target_source) == cluster.portal_role

    assert "re-wrapped 1 data source password(s)" in rewrap()
    raw = stored(target_source)
    assert raw.startswith("vt1.") and crypto.key_of(raw) == f"transit/{KEY}:v1"
    assert envelope.Envelope.loads(raw).wrapped.startswith(b"vault:v1:")
    assert cluster.portal_password not in raw
    for part in [raw, *raw.split(".")]:
        with pytest.raises(InvalidToken):
            local_keys_only().decrypt(part.encode())
    crypto.clear_key_cache()
    assert connects(target_source) == cluster.portal_role
    assert f"POST transit/decrypt/{KEY}" in transit.calls  # opened by Vault, not by a local key
    found = keys_control()
    assert found.status == "pass", found.reason
    assert found.reason.startswith(f"All 1 stored secrets are under Vault Transit key transit/{KEY}:v1")

    # Rotation: a new key version in Vault. Until the re-wrap the envelope is under v1.
    operator(transit).rotate_key(name=KEY)
    found = keys_control()
    assert found.status == "fail" and f"(transit/{KEY}:v1)" in found.reason, found.reason
    before = len(transit.calls)
    assert "re-wrapped 1 data source password(s)" in rewrap()
    raw_after = stored(target_source)
    assert crypto.key_of(raw_after) == f"transit/{KEY}:v2"
    assert raw_after.split(".")[:2] == raw.split(".")[:2] and raw_after.split(".")[3:] == raw.split(".")[3:]
    during = transit.calls[before:]
    assert f"POST transit/rewrap/{KEY}" in during and f"POST transit/decrypt/{KEY}" not in during, during

    # Old versions retired: the v1 wrapping no longer opens, the re-wrapped secret does.
    operator(transit).update_key_configuration(name=KEY, min_decryption_version=2)
    crypto.clear_key_cache()
    with pytest.raises(envelope.KeyUnavailable, match=r"disallowed by policy \(too old\)"):
        crypto.decrypt(raw)
    assert connects(target_source) == cluster.portal_role
    read_source(DataSource.objects.get(pk=target_source.pk))  # a sync logs in (raises if not)

    # Idempotent: a second run changes nothing, and says so.
    again = rewrap()
    assert "re-wrapped 0 data source password(s)" in again and "1 already current" in again
    assert stored(target_source) == raw_after
    events = AuditEvent.objects.filter(action="encryption_keys.rotated").order_by("id")
    assert [e.metadata["key"] for e in events] == [f"transit/{KEY}:v1", f"transit/{KEY}:v2", f"transit/{KEY}:v2"]
    assert [e.metadata["sources"] for e in events] == [1, 1, 0]
    assert keys_control().status == "pass"


def test_vault_denied_or_unreachable_is_a_clear_error_and_writes_nothing(
    target_source: DataSource, transit: Vault, settings: Any, client: Any, superuser: Any, gov_admin: Any
) -> None:
    rewrap()
    raw = stored(target_source)
    # The token's policy no longer allows decrypt: nothing opens, the sync says why.
    transit.deny(f"transit/decrypt/{KEY}")
    crypto.clear_key_cache()
    with pytest.raises(
        envelope.KeyUnavailable,
        match=rf"Vault refused to unwrap a data key with Transit key transit/{KEY}:v1: permission denied\.",
    ):
        crypto.decrypt(raw)
    with pytest.raises(SyncFailed, match=f"Could not sync {target_source.name}: Vault refused to unwrap"):
        read_source(DataSource.objects.get(pk=target_source.pk))

    # Vault gone: the admin still answers, the posture names the problem, a new password is refused.
    settings.VAULT_ADDR = f"http://127.0.0.1:{free_port()}"
    client.force_login(superuser)
    for url in ("/admin/governance/datasource/", f"/admin/governance/datasource/{target_source.pk}/change/"):
        assert client.get(url).status_code == 200
    found = keys_control()
    assert found.status == "fail" and "Vault could not be reached to read the key" in found.reason, found.reason
    with pytest.raises(Unavailable, match="The password cannot be stored now: Vault could not be reached"):
        datasource_update(source=target_source, actor=superuser, password="another")
    api = APIClient()
    issued = api_token_create(user=gov_admin, actor=gov_admin, scopes=["read", "admin"], name="transit")
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {issued.secret}")
    response = api.patch(f"/api/v1/sources/{target_source.name}/", {"password": "another"}, format="json")
    assert response.status_code == 503, response.content
    assert response.json()["error"]["field"] == "password" and "Vault could not be reached" in response.content.decode()
    assert stored(target_source) == raw


def test_the_start_up_check_names_a_missing_refused_or_unreachable_key_and_two_services(
    transit: Vault, settings: Any
) -> None:
    call_command("check", "--deploy", "--tag", "kms")  # usable: no error
    transit.deny(f"transit/keys/{KEY}")
    with pytest.raises(SystemCheckError, match=r"governance.E004.*Vault refused to read the key.*permission denied"):
        call_command("check", "--deploy", "--tag", "kms")
    transit.denied.clear()
    del transit.keys[KEY]
    with pytest.raises(SystemCheckError, match=rf"governance.E005.*Vault Transit has no key transit/{KEY}"):
        call_command("check", "--deploy", "--tag", "kms")
    settings.VAULT_ADDR = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(SystemCheckError, match=r"governance.E004.*Vault could not be reached to read the key"):
        call_command("check", "--deploy", "--tag", "kms")
    settings.FIELD_ENCRYPTION_KMS_KEY_ID = "alias/portal-secrets"
    with pytest.raises(SystemCheckError, match=r"governance.E006.*are both set"):
        call_command("check", "--tag", "kms")
    with pytest.raises(Exception, match="are both set"):
        crypto.encrypt("anything")


def test_a_tampered_or_relabelled_transit_envelope_is_refused(transit: Vault) -> None:
    token = crypto.encrypt("hunter2")
    sealed = envelope.Envelope.loads(token)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    with pytest.raises(Exception, match=f"under Vault Transit key transit/{KEY} fails its integrity check"):
        crypto.decrypt(dataclasses.replace(sealed, ciphertext=flipped).dumps())
    # Another key of the same Vault: Vault itself refuses to unwrap a data key it did not wrap.
    transit.create_key("other")
    crypto.clear_key_cache()
    with pytest.raises(envelope.KeyUnavailable, match="message authentication failed"):
        crypto.decrypt(dataclasses.replace(sealed, key_id="transit/other").dumps())
    wrapping = sealed.wrapped.replace(b"vault:v1:", b"vault:v1:A", 1)
    with pytest.raises(
        envelope.KeyUnavailable, match=f"Vault refused to unwrap a data key with Transit key transit/{KEY}"
    ):
        crypto.decrypt(dataclasses.replace(sealed, wrapped=wrapping).dumps())
    assert crypto.decrypt(token) == "hunter2"


def test_a_secret_under_another_transit_key_is_sealed_anew(transit: Vault, settings: Any) -> None:
    """A secret sealed under another Transit key (the setting now names a new key) cannot be
    re-wrapped inside Vault across keys: the re-wrap opens it with its own key and seals it anew."""
    first = crypto.encrypt("carried-over")
    transit.create_key("successor")
    settings.FIELD_ENCRYPTION_VAULT_TRANSIT_KEY = "successor"
    moved = crypto.rotate(first, current=crypto.current_key())
    assert crypto.key_of(moved) == "transit/successor:v1" and moved.split(".")[4] != first.split(".")[4]
    crypto.clear_key_cache()
    assert crypto.decrypt(moved) == "carried-over"

"""The real target of the provisioning tests, for the superuser-login control end to end."""

from tests.provisioning.conftest import target_dbname, target_source  # noqa: F401

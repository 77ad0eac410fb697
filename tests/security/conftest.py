"""The API tests' small world (people in every duty, a pending request, a grant, a job, a finding)."""

from tests.api.conftest import api, token_for, world  # noqa: F401 - fixtures shared with tests/api

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.audit.trail import SuperuserSession


@pytest.fixture
def superuser_sql() -> Iterator[SuperuserSession]:
    """A raw superuser session on the test database with triggers off (as a DBA could)."""
    session = SuperuserSession()
    yield session
    session.close()

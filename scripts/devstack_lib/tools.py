"""The tools the checks run: console scripts from the virtualenv, and what `make test` installs
when it is missing (Chromium, wrk, Node.js and the test OpenID provider)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .helpers import ROOT, StackError, say


def tool(name: str) -> str:
    """A console script from our virtualenv (next to this Python), else from PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if found is None:
        raise StackError(f"{name} is not installed; run `make install`")
    return found


def ensure_debian_package(command: str, package: str, why: str) -> None:
    """`command` from Debian's `package`, installed here when missing and this user may install
    packages (the CI machine); otherwise a one-line error says what to do."""
    if shutil.which(command):
        return
    apt = shutil.which("apt-get")
    if apt is None or os.geteuid() != 0:
        raise StackError(f"{why} needs {command}: install it (Debian: apt-get install {package}) and run again")
    say(f"installing {package} (apt-get install {package}) for {why}")
    # Wait for dpkg's lock (another install, unattended-upgrades at boot) instead of failing.
    wait = ["-o", "DPkg::Lock::Timeout=900"]
    install = [apt, *wait, "install", "-y", "--no-install-recommends", package]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, check=False, stdout=subprocess.DEVNULL, env=env).returncode != 0:
        subprocess.run([apt, *wait, "update"], check=False, stdout=subprocess.DEVNULL, env=env)
        if subprocess.run(install, check=False, stdout=subprocess.DEVNULL, env=env).returncode != 0:
            raise StackError(f"apt-get install {package} failed; install {command} and run again")


def ensure_wrk() -> None:
    """The API benchmark drives the server with wrk."""
    ensure_debian_package("wrk", "wrk", "the API benchmark")


def ensure_chromium() -> None:
    """Browser tests drive Debian's Chromium through Playwright (`playwright install` cannot
    download browsers here)."""
    ensure_debian_package("chromium", "chromium", "the browser tests")


OIDC_PROVIDER_DIR = ROOT / "tests" / "oidc"


def ensure_oidc_provider() -> None:
    """The OIDC tests run a real OpenID provider (the `oidc-provider` package under Node.js,
    tests/oidc/): its packages are installed from the committed lock file, again when it changes."""
    lock = OIDC_PROVIDER_DIR / "package-lock.json"
    stamp = OIDC_PROVIDER_DIR / "node_modules" / ".package-lock.json"
    if stamp.exists() and stamp.stat().st_mtime >= lock.stat().st_mtime:
        return
    ensure_debian_package("node", "nodejs", "the OIDC sign-in tests")
    ensure_debian_package("npm", "npm", "the OIDC sign-in tests")
    say("installing the test OpenID provider (npm ci in tests/oidc)")
    command = [shutil.which("npm") or "npm", "ci", "--no-audit", "--no-fund"]
    if subprocess.run(command, cwd=OIDC_PROVIDER_DIR, check=False, stdout=subprocess.DEVNULL).returncode != 0:
        raise StackError("npm ci in tests/oidc failed; run it there by hand to see why")

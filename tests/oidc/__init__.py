"""A real OpenID provider for the tests: tests/oidc/provider.js (the `oidc-provider` npm package under
Node.js) started on a free port, with an accounts file the tests rewrite to change people's groups."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from tests.processes import Output, free_port

HERE = Path(__file__).resolve().parent


class OidcProvider:
    client_id = "data-access-portal"

    def __init__(self, state_dir: Path, redirect_uri: str) -> None:
        self.accounts_file = state_dir / "accounts.json"
        self.redirect_uri = redirect_uri
        self.client_secret = secrets.token_urlsafe(24)
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._output: Output | None = None
        self.set_accounts({})

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def set_accounts(self, accounts: dict[str, dict[str, Any]]) -> None:
        """People at the provider, by subject; read again by the provider at every sign-in."""
        partial = self.accounts_file.with_suffix(".tmp")
        partial.write_text(json.dumps(accounts))
        os.replace(partial, self.accounts_file)  # never a half-written file under the provider

    def start(self) -> None:
        node = shutil.which("node")
        if node is None or not (HERE / "node_modules" / "oidc-provider").is_dir():
            raise RuntimeError("The OIDC tests need Node.js and `npm ci` in tests/oidc: `make test` installs them")
        self.port = free_port()
        argv = [node, str(HERE / "provider.js"), str(self.port), str(self.accounts_file)]
        self._process = subprocess.Popen(
            [*argv, self.client_id, self.client_secret, self.redirect_uri],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=HERE,
        )
        assert self._process.stdout is not None
        self._output = Output(self._process.stdout)
        deadline = time.monotonic() + 20
        while not self._output.contains("listening on"):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the OpenID provider did not start:\n{self._output.tail()}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def log(self) -> str:
        return self._output.tail() if self._output else ""

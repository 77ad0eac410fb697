"""moto's server as the tests' AWS: a real HTTP endpoint for boto3, started per test module.

`MotoServer.enforce_auth()` switches moto from "everything allowed" (for arranging buckets, users
and keys) to evaluating the IAM policies of whoever signs each request, through moto's own
`/moto-api/reset-auth` endpoint; from then on an S3 call with a grantee's keys is allowed or denied
by the policies attached to that grantee, as AWS would decide it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from tests.processes import free_port as free_port  # re-exported: the AWS tests take it from here

ACCOUNT = "123456789012"  # moto's default account
REGION = "eu-west-1"


@dataclass
class MotoServer:
    url: str
    proc: subprocess.Popen[bytes]
    keys: dict[str, tuple[str, str]] = field(default_factory=dict)  # access keys the tests made

    def client(self, service: str, keys: tuple[str, str] = ("testing", "testing")) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            service,
            region_name=REGION,
            endpoint_url=self.url,
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
            config=Config(retries={"max_attempts": 1}),
        )

    def enforce_auth(self) -> None:
        """From now on every request is authenticated and authorised by IAM policies."""
        requests.post(f"{self.url}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()

    def relax_auth(self) -> None:
        """Back to "everything allowed": an administrator's hands, for arranging drift."""
        requests.post(f"{self.url}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def portal_and_grantees(server: MotoServer, *, account: str, source: str, grantees: tuple[str, ...]) -> None:
    """IAM users for the portal (with the actions of its documented policy: moto enforces the
    actions of IAM calls, not their resources, see tests/provisioners/test_aws_iam.py) and for the
    grantees, their access keys in `server.keys`; then moto enforces authentication."""
    from governance.provisioners import aws_iam

    iam = server.client("iam")
    document = aws_iam.portal_policy_document(account=account, source=source)
    actions = {"Effect": "Allow", "Action": [a for s in document["Statement"] for a in s["Action"]], "Resource": "*"}
    iam.create_user(UserName="portal")
    iam.put_user_policy(
        UserName="portal",
        PolicyName="portal",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [actions]}),
    )
    for user in grantees:
        iam.create_user(UserName=user)
    for user in ("portal", *grantees):
        keys = iam.create_access_key(UserName=user)["AccessKey"]
        server.keys[user] = (keys["AccessKeyId"], keys["SecretAccessKey"])
    server.enforce_auth()


@contextmanager
def moto_server(port: int | None = None) -> Iterator[MotoServer]:
    """`moto_server` on a free port (or `port`), ready when it answers; stopped at the end."""
    port = port or free_port()
    binary = shutil.which("moto_server") or str(Path(sys.executable).parent / "moto_server")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    proc = subprocess.Popen(
        [binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    server = MotoServer(f"http://127.0.0.1:{port}", proc)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                requests.get(f"{server.url}/moto-api/", timeout=2)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield server
    finally:
        server.stop()

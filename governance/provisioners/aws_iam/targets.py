"""What and who: the S3 location, the IAM principal, the target, and the names' rules."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..errors import PermanentError

POLICY_VERSION = "2012-10-17"
MAX_VERSIONS = 5  # IAM's limit of versions per managed policy
READ_ACTIONS = ("s3:GetObject",)
LIST_ACTION = "s3:ListBucket"
WRITE_ACTIONS = ("s3:PutObject", "s3:DeleteObject")
LEVELS = ("read", "write", "admin")  # admin grants the same S3 actions as write

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9!_.'()/=-]{0,255}$")  # S3's "safe characters" (no * or ?), as a dataset name
_IAM_NAME = re.compile(r"^[\w+=,.@-]{1,64}$")
_SOURCE = re.compile(r"^[a-z0-9_-]{1,100}$")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; empty = the whole bucket)."""

    bucket: str
    prefix: str = ""

    def __post_init__(self) -> None:
        if not _BUCKET.match(self.bucket) or ".." in self.bucket:
            raise PermanentError(f"{self.bucket!r} is not a valid S3 bucket name.")
        if not _PREFIX.match(self.prefix) or self.prefix.startswith("/") or self.prefix.endswith("/"):
            raise PermanentError(
                f"{self.prefix!r} is not a usable prefix: S3's safe characters only, no '*' or '?', "
                "no leading or trailing '/'."
            )

    @property
    def objects_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}/{self.prefix}/*" if self.prefix else f"arn:aws:s3:::{self.bucket}/*"

    @property
    def bucket_arn(self) -> str:
        return f"arn:aws:s3:::{self.bucket}"

    @property
    def list_prefixes(self) -> list[str]:
        return [f"{self.prefix}/", f"{self.prefix}/*"]

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class IamPrincipal:
    """An IAM role or user the portal attaches policies to (it never creates identities)."""

    kind: str  # "role" or "user"
    name: str

    def __post_init__(self) -> None:
        if self.kind not in ("role", "user") or not _IAM_NAME.match(self.name):
            raise PermanentError(f"{self.kind}/{self.name} is not an IAM role or user name (role/NAME or user/NAME).")
        if len(str(self)) > 63:
            raise PermanentError(f"{self} is longer than the 63 characters a mapping holds.")

    @classmethod
    def parse(cls, text: str) -> IamPrincipal:
        """``role/NAME`` or ``user/NAME`` (as stored on a source principal mapping)."""
        kind, _, name = text.partition("/")
        return cls(kind, name)

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True)
class AwsTarget:
    """Where and as whom to call IAM. Empty keys: boto3's ambient credential chain."""

    region: str = "us-east-1"
    endpoint_url: str = ""
    access_key_id: str = ""
    secret_access_key: str = field(default="", repr=False)
    account_id: str = ""

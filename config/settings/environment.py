"""The environment the settings are read from (django-environ): real variables, then an optional
`.env` file, and NAME_FILE=/path for a secret mounted as a file (docs/deploy.md)."""

from pathlib import Path

import environ
from environ.fileaware_mapping import FileAwareMapping

BASE_DIR = Path(__file__).resolve().parent.parent.parent


class _SecretFiles(FileAwareMapping):
    """The environment, where NAME_FILE=/path gives setting NAME the content of that file (a mounted
    secret: docs/deploy.md), without the file's final newline."""

    def __getitem__(self, key: str) -> str:
        value: str = super().__getitem__(key)
        return value.rstrip("\r\n") if self.env.get(key + "_FILE") else value


class _Env(environ.Env):
    ENVIRON = _SecretFiles()


env = _Env()
# A .env file is optional; real environment variables win over it.
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

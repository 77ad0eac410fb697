"""The docs' shell walk-throughs as scripts: extracted from the Markdown, run in bash, compared.

What a reader sees is what runs. A fenced ``sh``/``bash``/``shell``/``console`` block of README.md or
docs/*.md is run as written, unless an HTML comment right above it (invisible on a rendered page)
says why not::

    <!-- not-run: starts the stack itself -->

Inside a block, a comment line that starts with ``→`` (after the ``#`` and some spaces), and the
comment lines right under it indented deeper, show what the command above printed:

    curl -s "$B/api/v1/access-requests/$REQ/"
    #    → {"state": "approved", "grant": {"status": "active", "verified_at": "...", ...}, ...}

JSON is compared as a subset (``...`` stands for whatever else there is, ``"..."`` for any value
that is not null, ``[...]`` for any list; list items match in any order); text is compared part by
part around ``...``; a leading HTTP status (``403 {...}``) is read but not compared (curl -s prints
the body only, and the body names the error). A command that shows no output must not answer with
an API error.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHELL_LANGS = frozenset({"sh", "bash", "shell", "console"})
NOT_RUN = re.compile(r"^<!--\s*not-run:\s*(?P<reason>.*?)\s*-->$")
FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<lang>[\w-]*)")
ARROW = re.compile(r"^#(?P<indent>\s*)→\s?(?P<text>.*)$")
ANY = "..."


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    text: str
    not_run: str | None  # the reason given by the marker above it, if any

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


@dataclass(frozen=True)
class Command:
    line: int  # in the Markdown file, 1-based
    text: str
    expected: str | None  # what the doc shows it printed, if anything


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file, with the not-run marker above each, if any."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        fence = opening["fence"]
        end = index + 1
        while end < len(lines) and not lines[end].startswith(fence):
            end += 1
        above = index - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        marker = NOT_RUN.match(lines[above].strip()) if above >= 0 else None
        found.append(
            Block(
                path=path,
                line=index + 1,
                lang=opening["lang"].lower(),
                text="\n".join(lines[index + 1 : end]),
                not_run=marker["reason"] if marker else None,
            )
        )
        index = end + 1
    return found


def shell_blocks(path: Path) -> list[Block]:
    return [block for block in blocks(path) if block.lang in SHELL_LANGS]


def commands(block: Block) -> list[Command]:
    """The block's commands (a line, with the lines its trailing backslashes continue onto), each
    with the output the doc shows under it."""
    result: list[Command] = []
    lines = block.text.splitlines()
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        arrow = ARROW.match(stripped)
        if arrow:
            if not result:
                raise ValueError(f"{block.path.name}:{block.line + 1 + index}: an output (→) with no command above it")
            expected = [arrow["text"]]
            depth = len(arrow["indent"])
            index += 1
            while index < len(lines):
                more = lines[index].strip()
                body = more[1:] if more.startswith("#") else None
                if body is None or len(body) - len(body.lstrip()) <= depth or not body.strip():
                    break
                expected.append(body.strip())
                index += 1
            last = result[-1]
            result[-1] = Command(last.line, last.text, " ".join(expected))
            continue
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        start = index
        while lines[index].rstrip().endswith("\\") and index + 1 < len(lines):
            index += 1
        result.append(Command(block.line + 1 + start, "\n".join(lines[start : index + 1]), None))
        index += 1
    return result


def script(cmds: list[Command], out_dir: Path) -> str:
    """One bash script: every command runs in this same shell (its variables stay), its standard
    output and error kept in files named after its number, the number of the running one in
    `current` (for the failure message)."""
    parts = []
    for number, command in enumerate(cmds):
        parts.append(f"printf '%s\\n' {number} > {out_dir}/current")
        parts.append(f"{{\n{command.text}\n}} > {out_dir}/{number}.out 2> {out_dir}/{number}.err")
    return "\n".join(parts) + "\n"


# --- comparing -------------------------------------------------------------------------------------

STATUS = re.compile(r"^(?P<status>[1-5]\d\d)\s+(?=[{\[])")


def _as_json_pattern(text: str) -> Any:
    """The doc's abbreviated JSON as a pattern: ``, ...`` dropped, ``[...]`` and ``{...}`` as ANY."""
    text = re.sub(r"\[\s*\.\.\.\s*\]|\{\s*\.\.\.\s*\}", json.dumps(ANY), text)
    text = re.sub(r"(?<=:)\s*\.\.\.(?=\s*[,}])", json.dumps(ANY), text)
    text = re.sub(r",\s*\.\.\.(?=\s*[}\]])", "", text)
    text = re.sub(r"(?<=[{\[])\s*\.\.\.\s*,", "", text)
    return json.loads(text)


def _matches(pattern: Any, actual: Any) -> bool:
    if pattern == ANY:
        return actual is not None
    if isinstance(pattern, dict):
        return isinstance(actual, dict) and all(k in actual and _matches(v, actual[k]) for k, v in pattern.items())
    if isinstance(pattern, list):
        return isinstance(actual, list) and all(any(_matches(p, a) for a in actual) for p in pattern)
    return bool(pattern == actual and type(pattern) is type(actual))


def mismatch(expected: str, output: str) -> str | None:
    """Why `output` is not what the doc shows (`expected`), or None when it is."""
    body = STATUS.sub("", expected.strip(), count=1)
    if body[:1] in "{[":
        try:
            pattern = _as_json_pattern(body)
        except json.JSONDecodeError as exc:
            return f"the doc's output is not JSON after its abbreviations ({exc}): {body}"
        try:
            actual = json.loads(output)
        except json.JSONDecodeError:
            return f"expected JSON like {body}, got: {output[:2000]}"
        return None if _matches(pattern, actual) else f"expected JSON like {body}, got: {output[:4000]}"
    parts = [re.escape(part.strip()) for part in body.split(ANY)]
    if re.search(r".*?".join(part for part in parts if part), output, re.DOTALL):
        return None
    return f"expected output like {body!r}, got: {output[:2000]}"


def api_error(output: str) -> str | None:
    """The API error an output is, if it is one (for commands the doc shows no output for)."""
    try:
        parsed = json.loads(output)
    except json.JSONDecodeError:
        return None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        return json.dumps(parsed["error"])
    return None

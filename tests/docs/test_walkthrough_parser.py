"""How tests/docs/walkthrough.py reads a doc: blocks, markers, commands, the outputs shown, and
what counts as a match (a wrong output must fail the walk-through test)."""

from __future__ import annotations

from pathlib import Path

from tests.docs import walkthrough

DOC = """# A doc

<!-- not-run: starts a server -->
```sh
make run
```

Then:

```bash
B=http://127.0.0.1:8000
# 1. Ask.
curl -s "$B/x" \\
     -H 'Accept: application/json'
#    → 403 {"error": {"code": "permission_denied", ...}}
echo done
#    → done
#       ... and more
#    A plain comment, not output.
```

```json
{"not": "shell"}
```
"""


def test_blocks_commands_and_their_shown_outputs(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text(DOC)
    first, second = walkthrough.shell_blocks(path)
    assert first.not_run == "starts a server" and first.line == 4
    assert second.not_run is None
    commands = walkthrough.commands(second)
    assert [c.text for c in commands] == [
        "B=http://127.0.0.1:8000",
        "curl -s \"$B/x\" \\\n     -H 'Accept: application/json'",
        "echo done",
    ]
    assert [c.line for c in commands] == [11, 13, 16]
    assert commands[1].expected == '403 {"error": {"code": "permission_denied", ...}}'
    assert commands[2].expected == "done ... and more"
    assert [b.lang for b in walkthrough.blocks(path)] == ["sh", "bash", "json"]


def test_json_outputs_match_as_a_subset_and_mismatches_are_reported() -> None:
    shown = '{"state": "approved", "grant": {"status": "active", "verified_at": "..."}, "plan": [...], ...}'
    actual = '{"id": 3, "state": "approved", "grant": {"status": "active", "verified_at": "2026-01-01"}, "plan": []}'
    assert walkthrough.mismatch(shown, actual) is None
    assert walkthrough.mismatch(shown, actual.replace('"active"', '"approved"')) is not None
    assert walkthrough.mismatch(shown, actual.replace('"2026-01-01"', "null")) is not None
    assert walkthrough.mismatch(shown, "not json") is not None
    listed = '{"count": 1, "results": [{"name": "ledger", ...}], ...}'
    assert walkthrough.mismatch(listed, '{"count": 1, "results": [{"id": 1}, {"name": "ledger"}]}') is None
    assert walkthrough.mismatch(listed, '{"count": 1, "results": [{"name": "orders"}]}') is not None
    assert (
        walkthrough.mismatch('403 {"error": {"code": "permission_denied"}}', '{"error": {"code": "permission_denied"}}')
        is None
    )
    assert walkthrough.mismatch('{"n": 1}', '{"n": true}') is not None


def test_text_outputs_match_part_by_part() -> None:
    assert (
        walkthrough.mismatch(
            "audit trail intact: ... anchor(s) hold", "audit trail intact: 9 events, 1 anchor(s) hold\n"
        )
        is None
    )
    assert walkthrough.mismatch("audit trail intact: ... anchor(s) hold", "audit trail BROKEN at 3\n") is not None


def test_api_errors_are_recognised() -> None:
    assert walkthrough.api_error('{"error": {"code": "not_authenticated"}}') == '{"code": "not_authenticated"}'
    assert walkthrough.api_error('{"count": 0, "results": []}') is None
    assert walkthrough.api_error("plain text") is None

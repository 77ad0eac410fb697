"""The provisioning figures of one `make bench` run, side by side, with their ratios and targets.

Each benchmark writes its figures to bench/results/<name>.json; at the end of the run
bench/conftest.py prints these lines for the files this run wrote (a narrowed run prints only its
own). The keys are read strictly: a benchmark that renames a figure breaks the summary in
`make test`'s smoke run, not silently in the next full `make bench`. Targets are issue 15's.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _approval(r: dict[str, Any]) -> str:
    ours = r["approval_to_active_ms"]
    ratio = r["ratio_p50_vs_floor"]
    return (
        f"approval -> verified Active ({r['approvals']} approvals): p50 {ours['p50']:.1f} ms, "
        f"p99 {ours['p99']:.1f} ms; floor (Celery echo + raw GRANT) {r['floor_p50_ms']:.1f} ms; "
        f"ratio {ratio:.1f} (target <= 2.5: {_met(ratio <= 2.5)}; p99 <= 60 ms: {_met(ours['p99'] <= 60)})"
    )


def _stress(r: dict[str, Any]) -> str:
    return (
        f"same-table stress, {r['workers']} workers: {r['jobs']} jobs, {r['failed']} failed "
        f"(target 0: {_met(r['failed'] == 0)}), reconcile clean: {r['reconcile_clean']}"
    )


def _one_table(r: dict[str, Any]) -> str:
    old = r["old_scheme"]
    refused = f"refused after {old['granted']:,}" if old["refusal"] else f"no refusal up to {old['granted']:,}"
    return (
        f"one table: {r['active_verified']:,} of {r['people']:,} people Active and verified "
        f"({r['portal_grants_per_s']:,.0f} grants/s), table ACL {r['acl_entries']} entries, reconcile "
        f"{r['reconcile_s'] * 1000:,.0f} ms clean: {r['reconcile_clean']}; old scheme {refused} grantees; "
        f"ratio to its rate {r['ratio_vs_floor']:.2f}"
    )


def _bulk(r: dict[str, Any]) -> str:
    ratio = r["ratio_vs_floor"]
    return (
        f"bulk: {r['grants']:,} grants ({r['users']} users x {r['tables']} tables) at "
        f"{r['portal_grants_per_s']:,.0f} grants/s; floor (old scheme, raw psycopg2) "
        f"{r['floor_grants_per_s']:,.0f} grants/s; ratio {ratio:.2f} (target >= 1.0: {_met(ratio >= 1.0)})"
    )


def _reconcile(r: dict[str, Any]) -> str:
    median = r["reconcile_ms"]["median"]
    return (
        f"reconcile: {r['grants']:,} grants over {r['tables']:,} tables in {median:,.0f} ms (median; target "
        f"<= {r['target_ms']:,.0f} ms: {_met(median <= r['target_ms'])}); floor (catalog read) "
        f"{r['floor_catalog_read_ms']['median']:,.0f} ms, ratio {r['ratio_vs_floor']:.1f}; "
        f"peak Python memory {r['peak_python_mb']:.1f} MB; {r['portal_queries']} portal queries"
    )


FIGURES: dict[str, Callable[[dict[str, Any]], str]] = {
    "approval_latency": _approval,
    "stress": _stress,
    "one_table": _one_table,
    "bulk": _bulk,
    "reconcile": _reconcile,
}


def lines(results: dict[str, dict[str, Any]]) -> list[str]:
    """One line per benchmark present in ``results`` (name -> its JSON), in FIGURES' order."""
    return [render(results[name]) for name, render in FIGURES.items() if name in results]


def written_since(started: float, directory: Path = RESULTS) -> dict[str, dict[str, Any]]:
    """The results files written at or after ``started`` (a time.time()), by name."""
    found: dict[str, dict[str, Any]] = {}
    names: Iterable[str] = FIGURES
    for name in names:
        path = directory / f"{name}.json"
        if path.exists() and path.stat().st_mtime >= started:
            found[name] = json.loads(path.read_text())
    return found

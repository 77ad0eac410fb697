"""Precision and recall of discovery on labelled columns (docs/discovery.md).

A labelled column is a dict: `table`, `column`, `type` (as PostgreSQL's `format_type()` writes it),
`values` (the sample as the sync sees it: cast to text, None for NULL) and `tags` (what a careful
steward would confirm). Each column goes through the same steps as in a sync: values only when the
sync would sample the column (`should_sample`), then `suggest_tags`. A suggestion is correct when
its tag is among the column's labels, whatever its confidence: the sync stores every suggestion.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .model import DEFAULT_THRESHOLD
from .suggest import should_sample, suggest_tags


@dataclass
class Score:
    expected: int = 0
    suggested: int = 0
    correct: int = 0

    @property
    def precision(self) -> float | None:
        return self.correct / self.suggested if self.suggested else None

    @property
    def recall(self) -> float | None:
        return self.correct / self.expected if self.expected else None


@dataclass
class Evaluation:
    columns: int = 0
    overall: Score = field(default_factory=Score)
    by_tag: dict[str, Score] = field(default_factory=dict)
    # "table.column: tag (how it was found)", never a value.
    false_positives: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)


def load(path: str | Path) -> list[dict[str, Any]]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of labelled columns")
    return data


def evaluate(columns: Iterable[Mapping[str, Any]], *, threshold: float = DEFAULT_THRESHOLD) -> Evaluation:
    result = Evaluation()
    for col in columns:
        result.columns += 1
        name, data_type = str(col["column"]), str(col["type"])
        samples: Sequence[str | None] | None = col["values"] if should_sample(name, data_type) else None
        suggestions = suggest_tags(name=name, data_type=data_type, samples=samples, threshold=threshold)
        expected = set(col["tags"])
        where = f"{col.get('table', '')}.{name}".lstrip(".")
        for tag in expected:
            result.by_tag.setdefault(tag, Score()).expected += 1
            result.overall.expected += 1
        for s in suggestions:
            score = result.by_tag.setdefault(s.tag, Score())
            score.suggested += 1
            result.overall.suggested += 1
            if s.tag in expected:
                score.correct += 1
                result.overall.correct += 1
            else:
                how = ", ".join(f"{f.detector}/{f.basis}: {f.shape}" for f in s.findings)
                result.false_positives.append(f"{where}: {s.tag} ({how})")
        for tag in sorted(expected - {s.tag for s in suggestions}):
            result.missed.append(f"{where}: {tag}")
    return result


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def report(evaluation: Evaluation, title: str) -> str:
    """The table a reader sees: one row per tag, then overall, then what went wrong."""
    rows = [f"{title}: {evaluation.columns} columns", ""]
    rows.append(f"{'tag':<15} {'expected':>8} {'suggested':>9} {'correct':>7} {'precision':>9} {'recall':>7}")
    for tag in sorted(evaluation.by_tag):
        s = evaluation.by_tag[tag]
        rows.append(
            f"{tag:<15} {s.expected:>8} {s.suggested:>9} {s.correct:>7} {_pct(s.precision):>9} {_pct(s.recall):>7}"
        )
    o = evaluation.overall
    rows.append(
        f"{'overall':<15} {o.expected:>8} {o.suggested:>9} {o.correct:>7} {_pct(o.precision):>9} {_pct(o.recall):>7}"
    )
    rows.append("")
    rows.append(f"false positives ({len(evaluation.false_positives)}):")
    rows.extend(f"  {line}" for line in evaluation.false_positives)
    rows.append(f"missed ({len(evaluation.missed)}):")
    rows.extend(f"  {line}" for line in evaluation.missed)
    return "\n".join(rows)

"""Lineage of a whole source: what the functions views call read, each view traced, the risks.

The column tracer is `catalog.lineage`; this module puts its results together with what the target's
catalog says about functions (SECURITY DEFINER ones above all) into the plain-data snapshot that
`catalog.sync_lineage` stores. Pure functions, no Django, no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .lineage import ALL_COLUMNS, ColRef, ColumnLineage, RelKey, ViewLineage, everything, trace_view

# --- functions: what their bodies read ------------------------------------------------------------

_TOKEN = re.compile(r'"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*)|(\.)')


def _identifiers(body: str) -> tuple[set[str], set[tuple[str, str]]]:
    """The identifiers a body mentions (unquoted ones folded to lower case, as PostgreSQL does),
    alone and as `a.b` pairs."""
    identifiers: list[str | None] = []
    for quoted, bare, dot in _TOKEN.findall(body):
        if dot:
            identifiers.append(None)
        else:
            identifiers.append(quoted.replace('""', '"') if quoted else bare.lower())
    names = {i for i in identifiers if i is not None}
    pairs: set[tuple[str, str]] = set()
    for i in range(1, len(identifiers) - 1):
        before, after = identifiers[i - 1], identifiers[i + 1]
        if identifiers[i] is None and before is not None and after is not None:
            pairs.add((before, after))
    return names, pairs


def mentioned_relations(body: str, known: Iterable[RelKey]) -> set[RelKey]:
    """The relations among `known` whose names a function body mentions: `schema.name`, or the bare
    name (the function's search_path is not known, so a bare name counts in every schema). A
    heuristic for bodies PostgreSQL records no dependencies of (PL/pgSQL, classic SQL bodies): it
    can only err on the side of more, since a body that builds its SQL as a string hides it."""
    names, pairs = _identifiers(body)
    return {(schema, name) for schema, name in known if (schema, name) in pairs or name in names}


def mentioned_functions(body: str, known: Iterable[tuple[int, str, str]]) -> set[int]:
    """The functions among `known` ((oid, schema, name)) a body may call: named, qualified or bare
    (every overload of that name counts)."""
    names, pairs = _identifiers(body)
    return {oid for oid, schema, name in known if (schema, name) in pairs or name in names}


@dataclass(frozen=True)
class FunctionReads:
    """What a function reads: exactly (a SQL-standard body) or by mention."""

    signature: str
    owner: str
    security_definer: bool
    public_execute: bool
    exact: frozenset[RelKey]
    mentioned: frozenset[RelKey]

    @property
    def reads(self) -> frozenset[RelKey]:
        return self.exact | self.mentioned


def function_reads(
    *,
    signature: str,
    owner: str,
    security_definer: bool,
    public_execute: bool,
    body: str,
    depends_on: Iterable[RelKey],
    known: Iterable[RelKey],
) -> FunctionReads:
    """What one function's own body reads (not what the functions it calls read: see `with_callees`)."""
    exact = frozenset(depends_on)
    return FunctionReads(
        signature=signature,
        owner=owner,
        security_definer=security_definer,
        public_execute=public_execute,
        exact=exact,
        mentioned=frozenset(mentioned_relations(body, known) - exact) if body else frozenset(),
    )


def with_callees(own: Mapping[int, FunctionReads], calls: Mapping[int, set[int]]) -> dict[int, FunctionReads]:
    """Each function's reads including, transitively, those of every function it calls (a function
    called by a SECURITY DEFINER one runs with the definer's privileges too). Cycle-safe."""
    out: dict[int, FunctionReads] = {}
    for oid, reads in own.items():
        seen, stack = {oid}, [oid]
        exact, mentioned = set(reads.exact), set(reads.mentioned)
        while stack:
            for callee in calls.get(stack.pop(), set()):
                if callee in seen or callee not in own:
                    continue
                seen.add(callee)
                stack.append(callee)
                exact |= own[callee].exact
                mentioned |= own[callee].mentioned
        out[oid] = FunctionReads(
            signature=reads.signature,
            owner=reads.owner,
            security_definer=reads.security_definer,
            public_execute=reads.public_execute,
            exact=frozenset(exact),
            mentioned=frozenset(mentioned - exact),
        )
    return out


# --- the whole source ---------------------------------------------------------------------------------


@dataclass
class LineageSnapshot:
    """What every catalogued view reads, as the sync found it (plain data for catalog/sync.py)."""

    # view -> upstream relation -> "" (the query names it) or the signature of the function reading it
    upstream: dict[RelKey, dict[RelKey, str]] = field(default_factory=dict)
    columns: dict[RelKey, ViewLineage] = field(default_factory=dict)
    notes: dict[RelKey, list[str]] = field(default_factory=dict)
    # relation -> SECURITY DEFINER functions that read it
    risks: dict[RelKey, list[dict[str, Any]]] = field(default_factory=dict)


def _qualified(key: RelKey) -> str:
    return f"{key[0]}.{key[1]}"


def analyse(
    *,
    views: Mapping[RelKey, Sequence[str]],
    reads: Mapping[RelKey, Mapping[RelKey, set[str]]],
    calls: Mapping[RelKey, set[int]],
    definitions: Mapping[RelKey, str],
    functions: Mapping[int, FunctionReads],
) -> LineageSnapshot:
    """Lineage of every catalogued view (`views`: key -> output columns in order), and the
    SECURITY DEFINER risks of every relation, from what the target's catalog says."""
    out = LineageSnapshot()
    for view, output_columns in views.items():
        used = {key: set(columns) for key, columns in reads.get(view, {}).items() if key != view}
        upstream: dict[RelKey, str] = dict.fromkeys(used, "")
        notes: list[str] = []
        opaque: set[RelKey] = set()
        for oid in sorted(calls.get(view, set())):
            function = functions.get(oid)
            if function is None:
                continue
            for key in sorted(function.reads - {view}):
                upstream.setdefault(key, function.signature)
                opaque.add(key)
            what = ", ".join(_qualified(k) for k in sorted(function.reads)) or "nothing the portal can see"
            notes.append(
                f"calls {function.signature}{' (SECURITY DEFINER)' if function.security_definer else ''}: "
                f"the columns that use it are judged also by what it reads ({what})"
            )
        definition = definitions.get(view)
        if definition is None:
            fallback = everything(used) | {ColRef(*k, ALL_COLUMNS) for k in opaque}
            traced = ViewLineage(
                columns=tuple(ColumnLineage(name, fallback, False, "no definition") for name in output_columns),
                problem="its definition could not be read",
            )
        else:
            traced = trace_view(
                definition, output_columns, used, opaque_reads=opaque, casts_run_code=bool(calls.get(view))
            )
        if traced.problem:
            notes.insert(0, f"{traced.problem}: every column is judged by everything the view reads")
        else:
            for column in traced.columns:
                if not column.exact:
                    notes.append(f"column {column.name}: {column.why}; judged by everything the view reads")
        out.upstream[view] = upstream
        out.columns[view] = traced
        out.notes[view] = notes
    for function in sorted(functions.values(), key=lambda f: f.signature):
        if not function.security_definer:
            continue
        for key in sorted(function.reads):
            out.risks.setdefault(key, []).append(
                {
                    "function": function.signature,
                    "owner": function.owner,
                    "public_execute": function.public_execute,
                    "evidence": "depends" if key in function.exact else "mentions",
                }
            )
    return out

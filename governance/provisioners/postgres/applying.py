"""Applying a plan in one target transaction: locks, guards, savepoints, in-band BEGIN/COMMIT, checks after COMMIT."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extensions import connection as PgConnection

from ..errors import ProvisioningError, TransientError
from .classify import (
    classify_error,
)
from .render import Plan, Statement, _is_last_lock, advisory_key, render
from .values import (
    DEFAULT_LOCK_TIMEOUT_MS,
    DEFAULT_STATEMENT_TIMEOUT_MS,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Applying
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """A read-only query that :func:`apply` runs right after its COMMIT, in the same round trip,
    and how to read its one row: verification after commit at no extra round trip. ``query`` is
    complete (parameters bound with :func:`bind`); with ``prepared`` it is the EXECUTE of that
    prepared statement (see :class:`Prepared`)."""

    query: bytes
    read: Callable[[tuple[Any, ...] | None], Any]
    prepared: Prepared | None = None

    def first(self) -> Check:
        """The same check reading only the first of the lists it returns (one desired state)."""
        return Check(self.query, lambda row: self.read(row)[0], self.prepared)

    def sql_on(self, conn: PgConnection) -> bytes:
        """What to send on ``conn``: the query, preceded by its PREPARE when ``conn`` lacks it."""
        if self.prepared is None or self.prepared.name in _PREPARED.get(_session(conn), ()):
            return self.query
        # A session we know nothing of (new, or after an error): start from no prepared statement.
        reset = b"" if _session(conn) in _PREPARED else b"DEALLOCATE ALL; "
        return reset + self.prepared.statement + b"; " + self.query

    def sent(self, conn: PgConnection) -> None:
        """The query ran on ``conn``: its prepared statement exists there from now on."""
        if self.prepared is not None:
            _PREPARED.setdefault(_session(conn), set()).add(self.prepared.name)

    def run(self, conn: PgConnection, what: str) -> Any:
        """The same check on its own (a read-only transaction), for a caller that applied nothing."""
        try:
            with _read(conn, what) as cur:
                cur.execute(self.sql_on(conn))
                row = cur.fetchone()
        except ProvisioningError:
            forget_prepared(conn)
            raise
        self.sent(conn)
        return self.read(row)


@dataclass(frozen=True)
class Prepared:
    """A server-side prepared statement, made once per target session. The verification queries
    are large catalog queries whose planning costs several times their execution (~6 ms against
    ~0.6 ms on a 2-core machine): prepared, PostgreSQL plans them once per session, not per job.

    ``template`` uses psycopg2's ``%(key)s`` placeholders, each followed by a cast (its type);
    ``keys`` gives their order."""

    name: str
    statement: bytes
    keys: tuple[str, ...]

    @classmethod
    def of(cls, name: str, template: sql.Composable, keys: Sequence[str]) -> Prepared:
        text = render(template)
        for n, key in enumerate(keys, start=1):
            text = text.replace(f"%({key})s", f"${n}")
        if "%(" in text:
            raise ValueError(f"{name}: a placeholder is not among the keys")
        prepare = sql.SQL("PREPARE {} AS {}").format(sql.Identifier(name), sql.SQL(text))
        return cls(name, render(prepare).encode(), tuple(keys))

    def execute(self, conn: PgConnection, params: Mapping[str, Any]) -> bytes:
        query = sql.SQL("EXECUTE {}({})").format(
            sql.Identifier(self.name), sql.SQL(", ").join(sql.Placeholder() for _ in self.keys)
        )
        return bind(conn, query, [params[k] for k in self.keys])


# (connection id, backend pid) -> the names prepared in that session by this process.
_PREPARED: dict[tuple[int, int], set[str]] = {}


def _session(conn: PgConnection) -> tuple[int, int]:
    return (id(conn), conn.info.backend_pid)


def forget_prepared(conn: PgConnection) -> None:
    """After an error on ``conn``: what it has prepared is unknown (the next use starts afresh)."""
    if not conn.closed:
        _PREPARED.pop(_session(conn), None)


def bind(conn: PgConnection, query: str | sql.Composable, params: Any) -> bytes:
    """``query`` with ``params`` bound by libpq's quoting on ``conn`` (no round trip)."""
    with conn.cursor() as cur:
        return cur.mogrify(query, params)


@dataclass(frozen=True)
class ApplyResult:
    """What ran (texts, secrets redacted), what a guard skipped, and how long the transaction took;
    ``checked`` is what the :class:`Check` given to :func:`apply` read after the commit."""

    digest: str
    preamble: str
    statements: tuple[str, ...]  # executed, in order
    skipped: tuple[str, ...]
    elapsed_ms: float
    checked: Any = None


def _require_idle(conn: PgConnection, what: str) -> None:
    if conn.closed:
        raise TransientError(f"{what}: the connection is closed", connection_lost=True)
    if conn.autocommit:
        raise ValueError(f"{what} needs a connection with autocommit off (one transaction per call)")
    if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        raise ValueError(f"{what} needs a connection with no open transaction")


def _rollback_quietly(conn: PgConnection) -> None:
    if not conn.closed:
        with suppress(psycopg2.Error):
            conn.rollback()


def _end_in_band(conn: PgConnection) -> None:
    """After :func:`apply` ran its own BEGIN/COMMIT with autocommit on: roll back whatever is left
    open (a failure mid-transaction) and give the connection back with autocommit off."""
    if conn.closed:
        return
    with suppress(psycopg2.Error):
        if conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
            with conn.cursor() as cur:
                cur.execute("ROLLBACK")
    with suppress(psycopg2.Error):
        conn.autocommit = False


def _lock_sql(keys: Sequence[int]) -> sql.Composable:
    return sql.SQL(", ").join(sql.SQL("pg_catalog.pg_advisory_xact_lock({})").format(sql.Literal(k)) for k in keys)


def _guard_passes(cur: Any, guard: sql.Composable) -> bool:
    cur.execute(guard)
    row = cur.fetchone()
    return bool(row and row[0])


# How many guards are asked in one round trip: the next guarded statements not answered yet. An
# answer stands until a statement that writes what its guard reads runs (Statement.voids); a
# statement that declares nothing voids every answer, so a plan of such statements asks again after
# each one that runs (unbounded, 500 new principals would then ask ~125,000 guards: O(n²)).
GUARD_WINDOW = 64
# Guards of a kind asked many at once (Statement.asked: one query over arrays, planned once for all
# of them) are not limited by GUARD_WINDOW, only by this: a batch of 500 grants asks its ~2,000
# guards in a few round trips.
GUARDS_AHEAD = 2_048


def _guards_query(guards: Sequence[sql.Composable]) -> sql.Composable:
    """Several guards (each a query returning one boolean) answered in one row."""
    return sql.SQL("SELECT {}").format(sql.SQL(", ").join(sql.SQL("({})").format(g) for g in guards))


def _ask_guards(statements: Sequence[Statement]) -> tuple[sql.Composable, Callable[[Any], list[bool]]]:
    """The guards of ``statements`` in one query returning one row, and how to read their answers
    from it (in order). Guards of one kind (``Statement.asked``) asked together are one column of
    that row, a boolean[] from one query over arrays; every other guard is a column of its own."""
    by_kind: dict[str, list[int]] = {}
    for n, st in enumerate(statements):
        if st.asked is not None:
            by_kind.setdefault(st.asked.kind.name, []).append(n)
    shared = [ns for ns in by_kind.values() if len(ns) > 1]
    alone = sorted(set(range(len(statements))) - {n for ns in shared for n in ns})
    columns = [statements[n].guard for n in alone]
    columns += [statements[ns[0]].asked.kind.many([statements[n].asked.args for n in ns]) for ns in shared]  # type: ignore[union-attr]

    def read(row: Any) -> list[bool]:
        answers = [False] * len(statements)
        if not row:
            return answers
        for col, n in enumerate(alone):
            answers[n] = bool(row[col])
        for col, ns in enumerate(shared, start=len(alone)):
            for n, answer in zip(ns, row[col] or [], strict=True):
                answers[n] = bool(answer)
        return answers

    return _guards_query(columns), read


def apply(
    conn: PgConnection,
    plan: Plan,
    *,
    lock_key: str,
    lock_timeout_ms: int = DEFAULT_LOCK_TIMEOUT_MS,
    statement_timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS,
    check: Check | None = None,
) -> ApplyResult:
    """Run ``plan`` in one transaction on ``conn`` and commit; then ``check``, if given.

    First, in one round trip: ``SET LOCAL lock_timeout`` and ``statement_timeout`` (as
    ``set_config(..., true)``) and ``pg_advisory_xact_lock`` on ``lock_key`` and the plan's lock keys,
    in ascending key order (every worker takes them in the same order, so they cannot deadlock). The
    lock serialises all work on the same object of this database across workers; ``lock_timeout``
    bounds the wait (a TransientError, retried later). Advisory locks live per database, which is
    the scope of a table's ACL. Then each statement (see :class:`Statement` for guards, lazy locks
    and savepoints), then COMMIT. A lazy (schema) lock is only ever taken after the object locks and
    is the last lock a transaction takes but one, so it cannot close a wait cycle either; a plan
    with several (a batch's combined plan) takes them all right after the object locks, in key
    order. The one after it is the database lock of ``GRANT CONNECT``, which ends every plan (a
    combined plan moves those statements to its end) and is always taken lazily: every
    transaction takes its locks in the same order (objects, schemas, the database).

    Round trips, each one where the next step needs an answer (the floor, a bare REVOKE + GRANT
    transaction through psycopg2, takes four: BEGIN, two statements, COMMIT):

    - BEGIN and COMMIT travel with the statements (the connection is in autocommit for the
      duration of the call, the transaction is explicit), never on their own;
    - statements that need no answer are sent together with the next guard, or with the COMMIT;
    - a lock the transaction holds already is not taken again, nor the guard asked again for it;
    - consecutive tolerated statements whose guards said yes (a batch's CREATE ROLEs) run in one
      savepoint, and one by one only if one of them meets what it tolerates;
    - the guards of the next guarded statements are answered together, in one row: the answer of
      a later guard stands as long as no statement that ran in between wrote what it reads (see
      :class:`Statement`: ``reads``, ``writes``); a statement that declares nothing voids them all.
      Guards of one kind (:class:`GuardKind`: a role missing, a package's ACL, CONNECT, USAGE, a
      privilege held directly) are one query over arrays per kind, planned once whatever their
      number, and up to ``GUARDS_AHEAD`` of them are asked at once (other guards: ``GUARD_WINDOW``);
    - ``check`` (the verification) runs after COMMIT in the same round trip, in its own implicit
      transaction: it sees what was committed, as a separate query after the commit would, and
      runs only when the commit succeeded.
    A converge of a grantee into an existing package is then: BEGIN + preamble + three guards;
    the GRANT + two guards; COMMIT + verification.

    Any failure rolls the whole transaction back: the target is left as it was. Raises
    TransientError or PermanentError (messages name the statements that were sent, secrets
    redacted).
    """
    _require_idle(conn, "apply()")
    if lock_timeout_ms <= 0 or statement_timeout_ms <= 0:
        raise ValueError("timeouts must be positive (0 would mean: wait for ever)")
    keys = sorted({advisory_key(lock_key), *(advisory_key(k) for k in plan.lock_keys)})
    preamble = sql.SQL(
        "SELECT set_config('lock_timeout', {}, true), set_config('statement_timeout', {}, true), {}"
    ).format(sql.Literal(str(int(lock_timeout_ms))), sql.Literal(str(int(statement_timeout_ms))), _lock_sql(keys))
    preamble_text = render(preamble)
    hidden = plan.secret_values
    executed: list[str] = []
    skipped: list[str] = []
    # Statements that need no answer are sent together, in one round trip with the next query that
    # does (a guard) or with the last ones. Entries: (query, text for errors, plan line or None).
    pending: list[tuple[sql.Composable, str, str | None]] = [
        (sql.SQL("BEGIN"), "BEGIN", None),
        (preamble, preamble_text, None),
    ]
    # The database lock (GRANT CONNECT, at the end of every plan) stays lazy whatever happens: it
    # is the last lock of every transaction, after the object and schema locks.
    lazy = sorted({advisory_key(k) for st in plan.statements for k in st.locks if not _is_last_lock(k)})
    # Advisory keys this transaction holds (taken with the first round trip, before any guard is
    # asked, or later by a statement that needed them).
    held = set(keys)
    if len(lazy) > 1:
        # A combined plan (a batch) would take several lazy (schema) locks mid-transaction in plan
        # order, and two batches could then wait on each other. Take them all now, in key order,
        # after the object locks: every transaction takes object locks first, then schema locks,
        # each group in ascending order, so no wait cycle can form.
        eager = sql.SQL("SELECT {}").format(_lock_sql(lazy))
        pending.append((eager, render(eager), None))
        held.update(lazy)
    current = preamble_text
    statements = plan.statements
    # Answers of guards asked ahead (statement index -> answer), valid while nothing ran since.
    answers: dict[int, bool] = {}
    checked: Any = None
    started = time.perf_counter()

    def send(cur: Any, final: sql.Composable | bytes | None = None, final_text: str = "") -> Any:
        """Run the pending statements, then ``final`` (if any), in one round trip; the answer is
        the first row of ``final``."""
        nonlocal current
        queries = [q for q, _, _ in pending] + ([final] if final is not None else [])
        if not queries:
            return None
        current = "; ".join([text for _, text, _ in pending] + ([final_text] if final is not None else []))
        parts = [q.as_string(conn) if isinstance(q, sql.Composable) else q.decode() for q in queries]
        cur.execute("; ".join(parts))
        executed.extend(line for _, _, line in pending if line is not None)
        pending.clear()
        if final is None:
            return None
        return cur.fetchone()

    def guard_passes(cur: Any, i: int) -> bool:
        """Statement i's guard; asked together with the guards of the next guarded statements not
        answered yet (their answers kept until a statement that voids them runs)."""
        if i in answers:
            return answers.pop(i)
        ahead = [i]
        loose = int(statements[i].asked is None)  # guards asked one subquery each (GUARD_WINDOW)
        j = i + 1
        while len(ahead) < GUARDS_AHEAD and j < len(statements):
            if statements[j].guard is not None and j not in answers:
                if statements[j].asked is None:
                    if loose == GUARD_WINDOW:
                        break
                    loose += 1
                ahead.append(j)
            j += 1
        query, read = _ask_guards([statements[k] for k in ahead])
        row = send(cur, query, f"guard of: {statements[i].text}")
        answers.update(zip(ahead, read(row), strict=True))
        return answers.pop(i)

    # Which guards read what (Statement.reads), so that a statement that runs forgets exactly the
    # answers it may change without comparing itself with every answer held (Statement.voids, asked
    # for each pair, cost a batch of 500 grants 362,000 calls).
    readers: dict[str, list[int]] = {}
    reads_anything: list[int] = []  # guards that declare nothing: any statement voids them
    for k, other in enumerate(statements):
        if other.guard is None:
            continue
        if other.reads is None:
            reads_anything.append(k)
        else:
            for topic_name in other.reads:
                readers.setdefault(topic_name, []).append(k)

    def ran(st: Statement) -> None:
        """``st`` runs: forget the answers it may change (exactly those ``st.voids``)."""
        if not answers:
            return
        if st.writes is None:
            answers.clear()
            return
        for k in reads_anything:
            answers.pop(k, None)
        for topic_name in st.writes:
            for k in readers.get(topic_name, ()):
                answers.pop(k, None)

    def shares_savepoint(run: list[int], j: int) -> bool:
        """Whether statement j can run in the savepoint of the tolerated statements ``run`` (which
        it follows): tolerated too, needing no lock not held, its guard answered yes already and
        not voided by them."""
        t = statements[j]
        return (
            bool(t.tolerate)
            and {advisory_key(k) for k in t.locks} <= held
            and (t.guard is None or answers.get(j) is True)
            and not any(statements[k].voids(t) for k in run)
        )

    # Tolerated statements up to this index run one savepoint each (after a shared one failed).
    alone_until = -1
    conn.autocommit = True  # BEGIN and COMMIT are sent in-band (see above); restored below
    try:
        with conn.cursor() as cur:
            i = -1
            while i + 1 < len(statements):
                i += 1
                st = statements[i]
                if st.guard is not None and not guard_passes(cur, i):
                    skipped.append(st.line)
                    continue
                ran(st)  # what was asked ahead and this statement changes must be asked again
                wanted = {advisory_key(k) for k in st.locks}
                if not wanted <= held:
                    # Taken only when the statement must run; then the guard is checked again, as
                    # another worker may have done the work while this one waited for the lock.
                    # The database lock after the others (see above), each group in key order.
                    # Once held, a later statement needing the same locks is not asked again: its
                    # guard is answered after the lock was taken (the answers asked before are
                    # dropped here), so no other worker can have changed what it reads since.
                    ordered = sorted(st.locks, key=lambda k: (_is_last_lock(k), advisory_key(k)))
                    lock = sql.SQL("SELECT {}").format(_lock_sql([advisory_key(k) for k in ordered]))
                    pending.append((lock, render(lock), None))
                    held.update(wanted)
                    for k in [k for k in answers if not wanted.isdisjoint(map(advisory_key, statements[k].locks))]:
                        del answers[k]
                    if st.guard is not None:
                        row = send(cur, st.guard, f"guard of: {st.text}")
                        if not (row and row[0]):
                            skipped.append(st.line)
                            continue
                if not st.tolerate:
                    pending.append((st.query, st.text, st.line))
                    continue
                # A tolerated statement ends its round trip, after what is pending, in a savepoint
                # named for it (rolling back to it can only undo what follows it). The tolerated
                # statements right after it whose guards said yes already (a batch's CREATE ROLEs,
                # which Plan.combine puts together) share it: if one of them meets "already done"
                # (another worker created the role meanwhile), they run again one savepoint each.
                run = [i]
                while i > alone_until and run[-1] + 1 < len(statements) and shares_savepoint(run, run[-1] + 1):
                    run.append(run[-1] + 1)
                    answers.pop(run[-1], None)
                    ran(statements[run[-1]])
                savepoint = sql.Identifier(f"gov_provision_{i}")
                pending.append((sql.SQL("SAVEPOINT {}").format(savepoint), "SAVEPOINT", None))
                ours = len(pending)
                pending.extend((statements[k].query, statements[k].text, statements[k].line) for k in run)
                try:
                    send(cur)
                except psycopg2.Error as exc:
                    if not any(exc.pgcode in statements[k].tolerate for k in run):
                        raise
                    # "Already done" after the savepoint: everything before it ran. If the error
                    # came from before it, the savepoint does not exist, rolling back to it fails,
                    # and the first error stands.
                    try:
                        cur.execute(sql.SQL("ROLLBACK TO SAVEPOINT {0}; RELEASE SAVEPOINT {0}").format(savepoint))
                    except psycopg2.Error:
                        raise exc from None
                    executed.extend(line for _, _, line in pending[: ours - 1] if line is not None)
                    pending.clear()
                    if len(run) == 1:
                        skipped.append(st.line)
                    else:
                        alone_until, i = run[-1], i - 1  # again, each on its own (guards asked again)
                    continue
                i = run[-1]
                pending.append((sql.SQL("RELEASE SAVEPOINT {}").format(savepoint), "RELEASE SAVEPOINT", None))
            pending.append((sql.SQL("COMMIT"), "COMMIT", None))
            if check is None:
                send(cur)
            else:
                checked = check.read(send(cur, check.sql_on(conn), "the verification after COMMIT"))
                check.sent(conn)
    except psycopg2.Error as exc:
        _end_in_band(conn)
        forget_prepared(conn)
        error = classify_error(exc, secret_values=hidden, statement=current)
        # A plan with secrets must not chain psycopg2's exception: its text may quote the statement.
        raise error from (None if hidden else exc)
    except BaseException:
        _end_in_band(conn)
        raise
    _end_in_band(conn)
    elapsed_ms = (time.perf_counter() - started) * 1000
    return ApplyResult(plan.digest, preamble_text, tuple(executed), tuple(skipped), elapsed_ms, checked)


@contextmanager
def _read(conn: PgConnection, what: str) -> Iterator[Any]:
    """A read-only transaction that is always ended (a pooled connection must not stay 'idle in
    transaction'); psycopg2 errors become ProvisioningErrors."""
    _require_idle(conn, what)
    try:
        with conn.cursor() as cur:
            yield cur
    except psycopg2.Error as exc:
        _rollback_quietly(conn)
        raise classify_error(exc, statement=what) from exc
    finally:
        _rollback_quietly(conn)

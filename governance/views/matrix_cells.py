"""The matrix's cells as HTML, built in Python.

A page holds up to 5,000 cells. Through the template engine each cost about 120 µs (2,000 cells:
250 ms, most of the page's time; see bench/bench_matrix.py), so the rows are rendered here with
plain string building. Every value that comes from data (role and user names, dataset names,
drift details) goes through `escape`; the markup is the same the template used to produce.
"""

from __future__ import annotations

import datetime as dt

from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from ..selectors.matrix import Cell, Column, Matrix, PendingFact, Row

EMPTY = '<td class="mx-cell"></td>'


class CellRenderer:
    def __init__(self, *, actions: bool, csrf_token: str, here: str) -> None:
        self.actions = actions
        self.csrf = f'<input type="hidden" name="csrfmiddlewaretoken" value="{escape(csrf_token)}">'
        self.next = f'<input type="hidden" name="next" value="{escape(here)}">'
        self.act_url = reverse("admin:governance_grant_matrix_act") if actions else ""
        self.inbox_url = reverse("portal:inbox")

    def row(self, row: Row) -> SafeString:
        label = escape(row.label)
        parts = [self.cell(label, col, cell) if not cell.empty else EMPTY for col, cell in row.cells]
        # Every data value above went through escape().
        return mark_safe("".join(parts))  # noqa: S308  # nosec B308 B703

    def cell(self, label: str, col: Column, cell: Cell) -> str:
        level = str(escape(cell.level))
        where = f"{escape(col.schema)}.{escape(col.name)}"
        classes = ["mx-cell", f"lvl-{level}"]
        words = [level]
        marks = []
        if cell.pending:
            classes.append("has-pending")
            words.append(f"{len(cell.pending)} pending")
            marks.append('<span class="mk mk-pending"></span>')
        if cell.expiring:
            classes.append("has-expiring")
            words.append("expiring soon")
            marks.append('<span class="mk mk-expiring"></span>')
        if cell.drift:
            classes.append("has-drift")
            words.append("drift")
            marks.append('<span class="mk mk-drift"></span>')
        letter = "" if level in ("none", "") else level[0].upper()  # a pending or drift marker alone
        items = [self.grant(g.id, g.level, g.ends_at, g.status) for g in cell.grants]
        items += [self.pending(p) for p in cell.pending]
        items += [
            f'<div class="mx-item drift"><p><strong>Drift</strong>: {escape(d.detail)}</p></div>' for d in cell.drift
        ]
        return (
            f'<td class="{" ".join(classes)}"><details><summary aria-label="{label} on {where}: {", ".join(words)}">'
            f'<span class="lvl lvl-{level}">{letter}</span>{"".join(marks)}</summary>'
            f'<div class="mx-pop"><p class="mx-pop-title">{label} → {where}</p>{"".join(items)}</div></details></td>'
        )

    def grant(self, pk: int, level: str, ends_at: dt.datetime, status: str) -> str:
        until = timezone.localtime(ends_at).strftime("%Y-%m-%d %H:%M")
        state = f" ({escape(status)})" if status != "active" else ""
        title = escape(level.capitalize())
        html = f'<div class="mx-item"><p><strong>{title}</strong> grant #{pk} until {until}{state}</p>'
        if self.actions:
            html += (
                f'<form method="post" action="{self.act_url}">{self.csrf}'
                '<input type="hidden" name="action" value="revoke">'
                f'<input type="hidden" name="id" value="{pk}">{self.next}'
                f'<label for="rv-{pk}">Reason for revoking</label><input id="rv-{pk}" name="comment" required>'
                '<button type="submit" class="mx-btn danger">Revoke</button></form>'
            )
        return html + "</div>"

    def pending(self, p: PendingFact) -> str:
        since = timezone.localtime(p.submitted_at).strftime("%Y-%m-%d")
        html = (
            f'<div class="mx-item"><p><strong>Request #{p.id}</strong>: {escape(p.level)} for {escape(p.requester)}, '
            f"waiting for the {escape(p.stage_label.lower())} since {since}.</p>"
        )
        if self.actions and p.may_decide:
            html += (
                f'<form method="post" action="{self.act_url}">{self.csrf}'
                f'<input type="hidden" name="id" value="{p.id}">'
                f'<input type="hidden" name="stage" value="{escape(p.stage)}">{self.next}'
                f'<label for="cm-{p.id}">Comment (required to deny)</label><input id="cm-{p.id}" name="comment">'
                '<button type="submit" name="action" value="approve" class="mx-btn ok">Approve</button> '
                '<button type="submit" name="action" value="deny" class="mx-btn danger">Deny</button></form>'
            )
        elif p.may_decide:
            html += f'<p><a href="{self.inbox_url}">Decide in your inbox</a></p>'
        else:
            html += '<p class="muted small">Not yours to decide at this stage.</p>'
        return html + "</div>"


def rendered_rows(matrix: Matrix, *, actions: bool, csrf_token: str, here: str) -> list[tuple[Row, SafeString]]:
    renderer = CellRenderer(actions=actions, csrf_token=csrf_token, here=here)
    return [(row, renderer.row(row)) for row in matrix.rows]

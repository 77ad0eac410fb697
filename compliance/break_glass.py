"""The control over break-glass access (breakglass/, docs/break-glass.md): every use reviewed by an
officer within its deadline; uses that ended with no use seen are named too (the glass broken for
nothing is worth a question). Two queries whatever the number of uses."""

from __future__ import annotations

from breakglass.selectors import overdue_uses, unused_uses

from .checks import FAIL, NOT_APPLICABLE, PASS, _listed, _sample, _State


def break_glass_reviewed(state: _State) -> tuple[str, str]:
    overdue_total, overdue = _sample(overdue_uses(now=state.now), "pk", "user__username")
    unused_total, unused = _sample(unused_uses(now=state.now), "pk", "user__username")
    unused_line = (
        f" {unused_total} ended with no use seen on the source ("
        + _listed((f"#{pk} by {who}" for pk, who in unused), unused_total)
        + ")."
        if unused_total
        else ""
    )
    if overdue_total:
        return FAIL, (
            f"{overdue_total} break-glass uses not reviewed in time ("
            + _listed((f"#{pk} by {who}" for pk, who in overdue), overdue_total)
            + ")."
            + unused_line
        )
    if not unused_total and not _any_use():
        return NOT_APPLICABLE, "Nobody has broken the glass."
    return PASS, "Every break-glass use was reviewed in time or is still within its deadline." + unused_line


def _any_use() -> bool:
    from breakglass.models import BreakGlassUse

    return BreakGlassUse.objects.exists()

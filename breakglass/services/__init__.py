"""Every write of the break-glass app (docs/break-glass.md)."""

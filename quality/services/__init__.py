"""Every write of the quality app: checks (define, change, review, remove) and runs (docs/quality.md)."""

"""Operations: health probes, Prometheus metrics and JSON logs (docs/operations.md)."""

"""Every write of the privacy app, each with its audit event in the same transaction."""

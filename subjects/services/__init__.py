"""Every write of the data-subject requests app, each with its audit event in the same transaction."""

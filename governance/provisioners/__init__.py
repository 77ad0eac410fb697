"""Adapters that make a target system match the portal's desired state: plan / apply / verify / observe.

Each adapter talks to exactly one kind of target (``postgres``: roles and GRANTs; ``aws_iam``:
policies) and knows nothing of the Django ORM: the caller (a service run by a Celery task) reads the
desired state from the portal's database, hands the adapter plain values, and records the outcome.
Adapters never write to the portal's database and never run inside a portal transaction.
"""

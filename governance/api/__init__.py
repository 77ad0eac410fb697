"""The REST API under /api/v1/: thin DRF views over the same services and selectors as the admin.

- `errors`: one envelope for every error;
- `permissions`: token scopes on top of the user's own rights;
- `idempotency`: replayable creates and decisions (`Idempotency-Key`);
- `serializers`, `filters`, `views`, `urls`: the resources.
"""

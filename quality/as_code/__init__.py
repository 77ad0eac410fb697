"""Data quality checks as code (docs/quality.md#checks-as-code): a YAML (or JSON) document kept with
the data, exported from the portal, planned and applied with the same services as every other edge.

Made to be embedded: a portal-wide "policy as code" document can hold this one as its `quality`
section, call `plan()` and `apply()` on it, and show `Plan.render()` / `Plan.as_dict()`.
"""

from .document import DocumentError, load_yaml, openapi_schema, schema, to_yaml, validate
from .plans import Plan, apply, export_checks, find_datasets, key_of, plan

__all__ = [
    "DocumentError",
    "Plan",
    "apply",
    "export_checks",
    "find_datasets",
    "key_of",
    "load_yaml",
    "openapi_schema",
    "plan",
    "schema",
    "to_yaml",
    "validate",
]

"""Every list is paged: `?page=N&page_size=M` (at most 200), with the total count.

DRF ignores a `page_size` it cannot read (`null`, `abc`, `0`) and serves the default, and takes
`page=last`: the schema promises integers from 1, so anything else is a 400 naming the parameter.
A `page_size` above the maximum is still served at the maximum, as documented. A page past the
last one is a 404, as in DRF. Both are bounded by `MAX_INTEGER` (PostgreSQL's bigint, declared in the
schema): a longer number is a 400 like any other bad value, never handed to `int()`, which refuses
more than 4,300 digits with a ValueError (a 500).
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import pagination
from rest_framework.request import Request

from ..errors import InvalidInput

MAX_INTEGER = 2**63 - 1
# At most 19 digits (MAX_INTEGER's length) after a sign: int() of it is cheap and cannot raise.
_INTEGER = re.compile(r"-?[0-9]{1,19}")


def query_positive_int(request: Request, name: str) -> int | None:
    """The query parameter `name` as an integer from 1 to MAX_INTEGER, None when absent; else a 400."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw) or not 1 <= int(raw) <= MAX_INTEGER:
        raise InvalidInput(f"{name} must be a whole number from 1 to {MAX_INTEGER}.", field=name)
    return int(raw)


def at_least_one(parameters: list[dict[str, Any]], maximum: int | None) -> list[dict[str, Any]]:
    """The paginator's documented parameters, with the bounds the API enforces."""
    for parameter in parameters:
        if parameter["schema"].get("type") == "integer":
            parameter["schema"] = {**parameter["schema"], "minimum": 1, "maximum": MAX_INTEGER}
            if parameter["name"] == "page_size" and maximum:
                parameter["description"] = f"Number of results per page, at most {maximum} (larger is {maximum})."
    return parameters


class PageNumberPagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    last_page_strings = ()  # `page=last` is not an integer

    def get_page_size(self, request: Request) -> int:
        size = query_positive_int(request, "page_size")
        return self.page_size if size is None else min(size, self.max_page_size)

    def get_page_number(self, request: Request, paginator: Any) -> Any:
        return query_positive_int(request, self.page_query_param) or 1

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return at_least_one(super().get_schema_operation_parameters(view), self.max_page_size)

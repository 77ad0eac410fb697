"""Every list is paged: `?page=N&page_size=M` (at most 200), with the total count.

DRF ignores a `page_size` it cannot read (`null`, `abc`, `0`) and serves the default, and takes
`page=last`: the schema promises integers from 1, so anything else is a 400 naming the parameter.
A `page_size` above the maximum is still served at the maximum, as documented. A page past the
last one is a 404, as in DRF.
"""

from __future__ import annotations

import re
from typing import Any

from rest_framework import pagination
from rest_framework.request import Request

from ..errors import InvalidInput

_INTEGER = re.compile(r"-?[0-9]+")


def query_positive_int(request: Request, name: str) -> int | None:
    """The query parameter `name` as an integer of at least 1, None when absent; else a 400."""
    raw = request.query_params.get(name)
    if raw is None:
        return None
    if not _INTEGER.fullmatch(raw) or int(raw) < 1:
        raise InvalidInput(f"{name} must be a whole number of at least 1.", field=name)
    return int(raw)


def at_least_one(parameters: list[dict[str, Any]], maximum: int | None) -> list[dict[str, Any]]:
    """The paginator's documented parameters, with the bounds the API enforces."""
    for parameter in parameters:
        if parameter["schema"].get("type") == "integer":
            parameter["schema"] = {**parameter["schema"], "minimum": 1}
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

"""`{{ budget.total|plain }}`: privacy.numbers.plain in templates."""

from __future__ import annotations

from django import template

from ..numbers import plain as plain_number

register = template.Library()
register.filter("plain", plain_number)

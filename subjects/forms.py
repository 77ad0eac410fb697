"""The portal's data-subject request forms. They shape input only; every rule (who, which states,
separation of duties) is the services' and shows on the field it names."""

from __future__ import annotations

from typing import Any

from django import forms

from .models import HandlingAction, IdentifierKind, LegalBasis, RequestKind
from .services.requests import MAX_VALUE
from .services.self_service import MAX_MESSAGE

IDENTIFIER_ROWS = 3
BLANK = [("", "—")]


class RequestCreateForm(forms.Form):
    """A privacy officer records a subject's request: its kind, up to three identifiers (kind and
    value; at least one) and a case reference. The values are the one place identifiers are typed:
    they are never shown again (autocomplete off, so the browser keeps no copy either)."""

    kind = forms.ChoiceField(choices=BLANK + RequestKind.choices)
    reference = forms.CharField(
        max_length=100, required=False, help_text="Your case reference (no personal data: it is shown in lists)."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for i in range(IDENTIFIER_ROWS):
            self.fields[f"identifier_kind_{i}"] = forms.ChoiceField(
                label=f"Identifier {i + 1}", choices=BLANK + IdentifierKind.choices, required=False
            )
            self.fields[f"identifier_value_{i}"] = forms.CharField(
                label=f"Value {i + 1}",
                max_length=MAX_VALUE,
                required=False,
                widget=forms.TextInput(attrs={"autocomplete": "off", "spellcheck": "false"}),
            )

    def identifier_rows(self) -> list[tuple[forms.BoundField, forms.BoundField]]:
        return [(self[f"identifier_kind_{i}"], self[f"identifier_value_{i}"]) for i in range(IDENTIFIER_ROWS)]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        identifiers: dict[str, str] = {}
        for i in range(IDENTIFIER_ROWS):
            kind = data.get(f"identifier_kind_{i}") or ""
            value = (data.get(f"identifier_value_{i}") or "").strip()
            if f"identifier_kind_{i}" in self.errors or f"identifier_value_{i}" in self.errors:
                continue
            if not kind and not value:
                continue
            if not kind:
                self.add_error(f"identifier_kind_{i}", "Say what kind of identifier this value is.")
            elif not value:
                self.add_error(f"identifier_value_{i}", "Give the value, or leave the kind empty.")
            elif kind in identifiers:
                self.add_error(f"identifier_kind_{i}", "This kind is given twice: one value per kind.")
            else:
                identifiers[kind] = value
        if not identifiers and not any(k.startswith("identifier_") for k in self.errors):
            self.add_error("identifier_value_0", "Give at least one identifier of the subject.")
        data["identifiers"] = identifiers
        return data


class ExtendForm(forms.Form):
    reason = forms.CharField(
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Why the deadline moves (Art. 12(3): complexity, number of requests). Once only.",
    )


class HandlingForm(forms.Form):
    action = forms.ChoiceField(choices=HandlingAction.choices, widget=forms.RadioSelect)
    legal_basis = forms.ChoiceField(
        choices=BLANK + LegalBasis.choices, required=False, help_text="Required when the data is retained."
    )
    reason = forms.CharField(
        max_length=2000,
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required when the data is retained: the law or the hold.",
    )


class SelfServiceForm(forms.Form):
    """What a user asks about their own data. No identifier field: the account's e-mail is used."""

    kind = forms.ChoiceField(choices=RequestKind.choices, widget=forms.RadioSelect, label="What do you ask for?")
    message = forms.CharField(
        max_length=MAX_MESSAGE,
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="Optional: anything the privacy officers should know (for a correction: what is wrong).",
    )

"""The Run-now form, built from a definition's typed parameters.

Every value is checked by scheduler.parameters.coerce_value, the same function
the Python and HTTP APIs use, so a value is accepted or refused with the same
message wherever it comes from.
"""

from __future__ import annotations

from django import forms

from scheduler.models import ExecutionResource, TaskDefinition
from scheduler.parameters import ParameterError, coerce_value


def run_now_form_class(definition: TaskDefinition) -> type[forms.Form]:
    params = list(definition.parameters.all())
    fields: dict[str, forms.Field] = {}
    for p in params:
        common = {"label": p.name, "help_text": p.help_text, "required": False}
        initial = p.default
        if p.type == "boolean":
            fields[f"param_{p.name}"] = forms.BooleanField(
                initial=initial.lower() in {"1", "true", "yes", "on"} if initial else False,
                **common,
            )
        elif p.type == "choice":
            choices = [("", "---------")] + [(str(c), str(c)) for c in p.choices or []]
            fields[f"param_{p.name}"] = forms.ChoiceField(
                choices=choices, initial=initial, **common
            )
            # Accept any submitted text: coerce_value says which choices exist.
            fields[f"param_{p.name}"].valid_value = lambda value: True
        else:
            widget = forms.DateInput(attrs={"type": "date"}) if p.type == "date" else None
            fields[f"param_{p.name}"] = forms.CharField(
                initial=initial, widget=widget, max_length=10_000, strip=True, **common
            )
        if p.required:
            fields[f"param_{p.name}"].label = f"{p.name} *"
    fields["resource"] = forms.ModelChoiceField(
        queryset=ExecutionResource.objects.filter(enabled=True),
        required=False,
        empty_label="(the definition's default)",
        help_text="Where to run it.",
    )
    fields["run_at"] = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
        help_text="Leave empty to run now.",
    )

    def clean(self):
        cleaned = super(form_class, self).clean()
        values = {}
        for p in params:
            raw = cleaned.get(f"param_{p.name}")
            if p.type == "boolean":
                values[p.name] = bool(raw)
                continue
            if raw in (None, ""):
                if p.required and p.default == "":
                    self.add_error(f"param_{p.name}", f"{p.name}: a value is required.")
                continue
            try:
                values[p.name] = coerce_value(p, raw)
            except ParameterError as exc:
                self.add_error(f"param_{p.name}", str(exc))
        cleaned["parameters"] = values
        return cleaned

    form_class = type("RunNowForm", (forms.Form,), {**fields, "clean": clean})
    return form_class

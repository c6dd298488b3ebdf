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

    fields.update(advanced_fields(definition))

    def clean(self):
        cleaned = super(form_class, self).clean()
        clean_advanced(self, cleaned)
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


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput())
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        single = super().clean
        if isinstance(data, (list, tuple)):
            return [single(d, initial) for d in data if d]
        return [single(data, initial)] if data else []


ADVANCED = ("adv_",)


def advanced_fields(definition: TaskDefinition) -> dict[str, forms.Field]:
    """The "Advanced" part of Run now: what this run needs (blank: as the
    definition says) and its input files."""
    from django.conf import settings

    from scheduler.display import size

    d = definition

    def number(label, current, example, minimum=1):
        return forms.IntegerField(
            label=label,
            required=False,
            min_value=minimum,
            help_text=f"Definition: {current if current not in (None, '') else 'not set'}. "
            f"e.g. {example}.",
        )

    return {
        "adv_cores": number("Cores", d.cores, 4),
        "adv_memory_mb": number("Memory (MB)", d.memory_mb, 8000),
        "adv_wall_time_seconds": number("Wall time (seconds)", d.timeout_seconds, 3600),
        "adv_gpus": number("GPUs", d.gpus, 1, minimum=0),
        "adv_processes_per_host": number("Processes per host", d.processes_per_host, 32),
        "adv_mpi": forms.ChoiceField(
            label="MPI",
            required=False,
            choices=[
                ("", f"as the definition ({'yes' if d.mpi else 'no'})"),
                ("yes", "yes"),
                ("no", "no"),
            ],
        ),
        "adv_queue": forms.CharField(
            label="Queue",
            required=False,
            max_length=100,
            help_text=f"Definition: {d.queue or 'the resource default'}.",
        ),
        "adv_project": forms.CharField(
            label="Project/account",
            required=False,
            max_length=100,
            help_text=f"Definition: {d.project or 'the resource default'}.",
        ),
        "adv_environment": forms.CharField(
            label="Environment",
            required=False,
            widget=forms.Textarea(attrs={"rows": 3, "cols": 60}),
            help_text="NAME=VALUE, one a line; added to the definition's "
            f"({', '.join(sorted(d.environment)) or 'none'}).",
        ),
        "adv_inputs": MultipleFileField(
            label="Input files",
            required=False,
            help_text="Put into inputs/ of the run directory; at most "
            f"{size(settings.SCHEDULER_MAX_INPUT_BYTES)} together.",
        ),
        "adv_from_outputs": forms.CharField(
            label="Inputs from earlier runs",
            required=False,
            max_length=2000,
            help_text="Output files of earlier runs, e.g. run:12/result.csv, separated by "
            "commas or spaces.",
        ),
    }


def clean_advanced(form, cleaned: dict) -> None:
    """cleaned["needs"] (the override) and cleaned["inputs"] from the Advanced fields."""
    from scheduler import inputs as run_inputs
    from scheduler.models import OutputFile

    needs: dict = {}
    for key in ("cores", "memory_mb", "wall_time_seconds", "gpus", "processes_per_host"):
        value = cleaned.get(f"adv_{key}")
        if value is not None:
            needs[key] = value
    if cleaned.get("adv_mpi"):
        needs["mpi"] = cleaned["adv_mpi"] == "yes"
    for key in ("queue", "project"):
        if cleaned.get(f"adv_{key}"):
            needs[key] = cleaned[f"adv_{key}"]
    env = {}
    for number, line in enumerate((cleaned.get("adv_environment") or "").splitlines(), 1):
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.strip():
            form.add_error("adv_environment", f"Line {number}: give NAME=VALUE, not {line[:60]!r}.")
            continue
        env[name.strip()] = value
    if env:
        needs["environment"] = env
    cleaned["needs"] = needs
    inputs: list = [run_inputs.Upload(f.name, f, f.size) for f in cleaned.get("adv_inputs") or []]
    for ref in (cleaned.get("adv_from_outputs") or "").replace(",", " ").split():
        run_id, sep, name = ref.removeprefix("run:").partition("/")
        if not sep or not run_id.isdigit() or not name:
            form.add_error(
                "adv_from_outputs", f"{ref!r}: give run:ID/NAME, e.g. run:12/result.csv."
            )
            continue
        file_id = (
            OutputFile.objects.filter(run_id=int(run_id), kind="output", name=name)
            .values_list("pk", flat=True)
            .first()
        )
        # An unknown file and one the user may not see read the same (scheduler.inputs).
        inputs.append(
            run_inputs.FromOutput(file_id if file_id is not None else -1, name, label=ref)
        )
    cleaned["inputs"] = inputs

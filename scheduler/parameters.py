"""Typed task parameters: turning submitted text or JSON values into checked values.

One place serves the Run-now form, the Python API, the HTTP API and recurrences,
so a value that one accepts the others accept too.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

MAX_STRING = 10_000


class ParameterError(ValueError):
    """A value does not fit its parameter; the message says why, for an operator."""


# The JSON types a value may have per parameter type when it comes as JSON (the
# HTTP API): JSON has numbers and booleans, so "10" for an integer is a mistake
# to report, not text to read. Forms, the CLI and schedules send text and keep
# being read leniently.
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int, float),
    "float": (int, float),
    "boolean": (bool,),
    "choice": (str, int, float),
    "date": (str,),
}
JSON_TYPE_NAMES = {
    "string": "a JSON string",
    "integer": 'a JSON number (e.g. 10, not "10")',
    "float": 'a JSON number (e.g. 2.5, not "2.5")',
    "boolean": "true or false (not a string)",
    "choice": "one of its choices as a JSON string",
    "date": "a JSON string YYYY-MM-DD",
}


def coerce_value(param: Any, raw: Any, *, json_types: bool = False) -> Any:
    """Return ``raw`` as the parameter's type, or raise ParameterError.

    With ``json_types`` the value must already have its JSON type (see JSON_TYPES)."""
    kind = param.type
    name = param.name
    if json_types and kind in JSON_TYPES:
        allowed = JSON_TYPES[kind]
        if not isinstance(raw, allowed) or (isinstance(raw, bool) and bool not in allowed):
            raise ParameterError(
                f"{name}: expected {JSON_TYPE_NAMES[kind]}, got {_json_type(raw)} {raw!r}."
            )
    if kind == "string":
        if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
            raise ParameterError(f"{name}: expected text, got {type(raw).__name__}.")
        text = str(raw)
        if len(text) > MAX_STRING or "\x00" in text:
            raise ParameterError(f"{name}: text must be under {MAX_STRING} characters, no NUL.")
        return text
    if kind == "integer":
        if isinstance(raw, bool):
            raise ParameterError(f"{name}: expected a whole number, got a boolean.")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ParameterError(f"{name}: {raw!r} is not a whole number (e.g. 10).") from None
    if kind == "float":
        if isinstance(raw, bool):
            raise ParameterError(f"{name}: expected a number, got a boolean.")
        try:
            value = float(str(raw).strip()) if not isinstance(raw, (int, float)) else float(raw)
        except ValueError:
            raise ParameterError(f"{name}: {raw!r} is not a number (e.g. 2.5).") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ParameterError(f"{name}: {raw!r} is not a finite number.")
        return value
    if kind == "boolean":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off", ""}:
            return False
        raise ParameterError(f"{name}: {raw!r} is not true or false.")
    if kind == "choice":
        choices = [str(c) for c in (param.choices or [])]
        if str(raw) not in choices:
            raise ParameterError(f"{name}: {raw!r} is not one of {', '.join(choices)}.")
        return str(raw)
    if kind == "date":
        if isinstance(raw, dt.date):
            return raw.isoformat()
        try:
            return dt.date.fromisoformat(str(raw).strip()).isoformat()
        except ValueError:
            raise ParameterError(f"{name}: {raw!r} is not a date as YYYY-MM-DD.") from None
    raise ParameterError(f"{name}: unknown parameter type {kind!r}.")


def _json_type(raw: Any) -> str:
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "a boolean"
    if isinstance(raw, (int, float)):
        return "a number"
    if isinstance(raw, str):
        return "a string"
    if isinstance(raw, list):
        return "an array"
    if isinstance(raw, dict):
        return "an object"
    return type(raw).__name__


def clean_parameters(
    definition: Any, values: dict[str, Any] | None, *, json_types: bool = False
) -> dict[str, Any]:
    """Check ``values`` against the definition's parameters; fill in defaults.

    Raises ParameterError listing every problem (unknown names, missing required
    values, values of the wrong type) in one message. ``json_types``: the values
    came as JSON and must have their JSON types (coerce_value).
    """
    values = dict(values or {})
    if not isinstance(values, dict):
        raise ParameterError("Parameters must be an object of name: value pairs.")
    params = list(definition.parameters.all())
    known = {p.name for p in params}
    problems = [f"{name}: no such parameter." for name in sorted(set(values) - known)]
    cleaned: dict[str, Any] = {}
    for param in params:
        if param.name in values and values[param.name] not in (None, ""):
            try:
                cleaned[param.name] = coerce_value(param, values[param.name], json_types=json_types)
            except ParameterError as exc:
                problems.append(str(exc))
        elif param.type == "boolean" and param.name in values:
            cleaned[param.name] = coerce_value(param, values[param.name] or False)
        elif param.default != "":
            cleaned[param.name] = coerce_value(param, param.default)
        elif param.required:
            problems.append(f"{param.name}: a value is required.")
    if problems:
        raise ParameterError(" ".join(problems))
    return cleaned

"""What a run needs: cores, processes per host, memory, GPUs, MPI, wall time,
queue, project and environment variables.

A definition says what its runs need; a run (Run now, the APIs, the CLI, a
schedule) may override any of it. ``resolve`` merges the two with the
resource's defaults and checks the result against the resource, so a local
resource refuses 64 cores it does not have before anything is queued. The
resolved dict is frozen on the run (``Run.needs``); the poller turns it into the
SAGA job description (poller.saga_executor) and the launcher sets the
environment (run.json).
"""

from __future__ import annotations

import fnmatch
import os
import re
from typing import Any

# Keys a run may override, with what they mean for an operator.
KEYS = {
    "cores": "cores (a whole number, 1 or more)",
    "processes_per_host": "processes per host (a whole number, 1 or more)",
    "memory_mb": "memory in MB (a whole number, 1 or more)",
    "gpus": "GPUs (a whole number, 0 or more)",
    "mpi": "MPI (true or false)",
    "wall_time_seconds": "wall time in seconds (a whole number, 1 or more)",
    "queue": "queue (a name)",
    "project": "project/account (a name)",
    "environment": "environment variables (an object of names to text)",
    "output_patterns": 'output file patterns (a list, e.g. ["results/*.csv"])',
}
NAME = re.compile(r"^[A-Za-z0-9_.:@+-]{1,100}$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
MAX_ENV_VARS = 100
MAX_ENV_VALUE = 4096
MAX_PATTERNS = 50
MAX_WALL_TIME = 366 * 24 * 3600


class NeedsError(ValueError):
    """What a run asks for cannot be given; the message says why, for an operator."""


def _whole(key: str, value: Any, *, minimum: int, json_types: bool) -> int:
    if isinstance(value, bool):
        raise NeedsError(f"{key}: expected {KEYS[key]}, got {value!r}.")
    if isinstance(value, str) and not json_types and re.fullmatch(r"\s*\d{1,12}\s*", value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int):
        raise NeedsError(f"{key}: expected {KEYS[key]}, got {value!r}.")
    if value < minimum:
        raise NeedsError(f"{key}: expected {KEYS[key]}, got {value}.")
    return value


def _flag(key: str, value: Any, *, json_types: bool) -> bool:
    if isinstance(value, bool):
        return value
    if not json_types and isinstance(value, str) and value.lower() in {"true", "false", "1", "0"}:
        return value.lower() in {"true", "1"}
    raise NeedsError(f"{key}: expected {KEYS[key]}, got {value!r}.")


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str) or (value and not NAME.match(value)):
        raise NeedsError(
            f"{key}: expected {KEYS[key]} of letters, digits and _ . : @ + -, got {value!r}."
        )
    return value


def check_environment(value: Any) -> dict[str, str]:
    """A clean copy of environment variables, or NeedsError. Names of the
    scheduler's own (SCHEDULER_*) are refused: the launcher sets those."""
    if value in (None, ""):
        return {}
    if not isinstance(value, dict):
        raise NeedsError('environment: give a JSON object of names to text, e.g. {"LANG": "C"}.')
    if len(value) > MAX_ENV_VARS:
        raise NeedsError(f"environment: at most {MAX_ENV_VARS} variables, got {len(value)}.")
    clean = {}
    for name, text in value.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise NeedsError(
                f"environment: {name!r} is not a variable name (letters, digits and _, "
                "not starting with a digit)."
            )
        if name.startswith("SCHEDULER_"):
            raise NeedsError(f"environment: {name} is the scheduler's own; choose another name.")
        if isinstance(text, bool) or not isinstance(text, (str, int, float)):
            raise NeedsError(f"environment: {name} must be text, got {text!r}.")
        text = str(text)
        if len(text) > MAX_ENV_VALUE or "\x00" in text:
            raise NeedsError(
                f"environment: {name} must be under {MAX_ENV_VALUE} characters, without NUL."
            )
        clean[name] = text
    return clean


def check_patterns(value: Any) -> list[str]:
    """Output file patterns (glob, relative to the run directory, no ``..``)."""
    if value in (None, ""):
        return []
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise NeedsError('give a JSON list of patterns, e.g. ["results/*.csv", "*.log"].')
    if len(value) > MAX_PATTERNS:
        raise NeedsError(f"at most {MAX_PATTERNS} patterns, got {len(value)}.")
    clean = []
    for pattern in value:
        parts = pattern.replace("\\", "/").split("/")
        if (
            not pattern.strip()
            or pattern.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or "\x00" in pattern
            or len(pattern) > 200
        ):
            raise NeedsError(
                f"the pattern {pattern[:100]!r} must stay inside the run directory "
                "(no leading /, no . or .. steps), e.g. results/*.csv."
            )
        clean.append("/".join(parts))
    return clean


def pattern_matches(patterns: list[str], relpath: str) -> bool:
    """Does ``relpath`` (a/b/c.csv) match one of the patterns? A ``*`` does not
    cross a ``/``: each step of the pattern matches one step of the path."""
    parts = relpath.split("/")
    for pattern in patterns:
        steps = pattern.split("/")
        if len(steps) == len(parts) and all(
            fnmatch.fnmatchcase(p, s) for p, s in zip(parts, steps, strict=True)
        ):
            return True
    return False


def _host_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _host_memory_mb() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError, AttributeError):
        return None


def of_definition(definition) -> dict[str, Any]:
    """What the definition's runs need, before any override."""
    return {
        "cores": definition.cores or 1,
        "processes_per_host": definition.processes_per_host,
        "memory_mb": definition.memory_mb,
        "gpus": definition.gpus or 0,
        "mpi": bool(definition.mpi),
        "wall_time_seconds": definition.timeout_seconds,
        "queue": definition.queue or "",
        "project": definition.project or "",
        "environment": dict(definition.environment or {}),
        "output_patterns": list(definition.output_patterns or []),
    }


def clean_override(override: Any, *, json_types: bool = False) -> dict[str, Any]:
    """An override's values in their types; blank text values are dropped (a
    form's empty field means "as the definition says")."""
    if override in (None, ""):
        return {}
    if not isinstance(override, dict):
        raise NeedsError(
            'what a run needs: give an object, e.g. {"cores": 4, "wall_time_seconds": 600}.'
        )
    unknown = sorted(set(override) - set(KEYS))
    if unknown:
        raise NeedsError(
            f"unknown {'keys' if len(unknown) > 1 else 'key'} {', '.join(map(repr, unknown))}; "
            f"a run may set {', '.join(KEYS)}."
        )
    clean: dict[str, Any] = {}
    for key, value in override.items():
        if value is None or (isinstance(value, str) and not value.strip() and key != "environment"):
            continue
        if key in ("cores", "processes_per_host", "memory_mb", "wall_time_seconds"):
            clean[key] = _whole(key, value, minimum=1, json_types=json_types)
        elif key == "gpus":
            clean[key] = _whole(key, value, minimum=0, json_types=json_types)
        elif key == "mpi":
            clean[key] = _flag(key, value, json_types=json_types)
        elif key in ("queue", "project"):
            clean[key] = _name(key, value.strip() if isinstance(value, str) else value)
        elif key == "output_patterns":
            try:
                clean[key] = check_patterns(value)
            except NeedsError as exc:
                raise NeedsError(f"output patterns: {exc}") from None
        else:
            clean[key] = check_environment(value)
    return clean


def resolve(definition, resource, override: Any, *, json_types: bool = False) -> dict[str, Any]:
    """What a run of ``definition`` on ``resource`` needs, with ``override``
    applied (the environment is merged, the run's names winning), checked
    against the resource. NeedsError names the first thing that cannot be given."""
    needs = of_definition(definition)
    extra = clean_override(override, json_types=json_types)
    environment = {**needs["environment"], **extra.pop("environment", {})}
    patterns = list(dict.fromkeys(needs["output_patterns"] + extra.pop("output_patterns", [])))
    needs.update(extra)
    needs["environment"] = environment
    needs["output_patterns"] = patterns[:MAX_PATTERNS]
    where = f"resource {resource.name!r}"
    batch = resource.is_batch()

    cores = needs["cores"]
    limit = resource.max_cores or (_host_cores() if resource.is_local() else None)
    if limit and cores > limit:
        said = "has" if resource.max_cores is None else "lets a run take"
        raise NeedsError(f"cores: {cores} asked for, but {where} {said} {limit}.")
    ppn = needs["processes_per_host"]
    if ppn and ppn > cores:
        raise NeedsError(f"processes per host: {ppn} is more than the run's {cores} cores.")
    memory = needs["memory_mb"]
    mem_limit = resource.max_memory_mb or (_host_memory_mb() if resource.is_local() else None)
    if memory and mem_limit and memory > mem_limit:
        said = "has" if resource.max_memory_mb is None else "lets a run take"
        raise NeedsError(f"memory: {memory} MB asked for, but {where} {said} {mem_limit} MB.")
    gpus = needs["gpus"]
    if gpus and not batch:
        raise NeedsError(f"GPUs: {where} is not a batch system and places no GPUs.")
    if gpus > (resource.max_gpus or 0):
        raise NeedsError(
            f"GPUs: {gpus} asked for, but {where} lets a run take {resource.max_gpus or 0}."
        )
    if needs["mpi"] and not batch:
        raise NeedsError(f"MPI: {where} is not a batch system; MPI runs go to one (e.g. Slurm).")
    if ppn and not batch:
        raise NeedsError(f"processes per host: {where} is not a batch system; leave it blank.")
    if ppn and not needs["mpi"]:
        raise NeedsError(
            "processes per host: only MPI runs have several processes; leave it blank."
        )
    wall = needs["wall_time_seconds"]
    if wall and wall > MAX_WALL_TIME:
        raise NeedsError(f"wall time: at most {MAX_WALL_TIME} seconds (366 days), got {wall}.")
    queue = needs["queue"]
    if queue and not batch:
        raise NeedsError(f"queue: {where} is not a batch system and has no queues.")
    if batch:
        needs["queue"] = queue or resource.queue
        allowed = resource.allowed_queues()
        if needs["queue"] not in allowed:
            raise NeedsError(
                f"queue: {needs['queue']!r} is not a queue of {where}; it has "
                f"{', '.join(allowed) or 'none listed'}."
            )
        needs["project"] = needs["project"] or resource.project
    elif needs["project"]:
        raise NeedsError(f"project: {where} is not a batch system and charges no account.")
    return needs


def summary(needs: dict[str, Any]) -> str:
    """One line for the run page: "2 cores, 4,000 MB, MPI, queue debug, 2 variables"."""
    if not needs:
        return ""
    cores = needs.get("cores") or 1
    parts = [f"{cores} core{'s' if cores != 1 else ''}"]
    if needs.get("processes_per_host"):
        parts.append(f"{needs['processes_per_host']} per host")
    if needs.get("memory_mb"):
        parts.append(f"{needs['memory_mb']:,} MB")
    if needs.get("gpus"):
        parts.append(f"{needs['gpus']} GPU{'s' if needs['gpus'] != 1 else ''}")
    if needs.get("mpi"):
        parts.append("MPI")
    if needs.get("wall_time_seconds"):
        parts.append(f"wall time {needs['wall_time_seconds']:,} s")
    if needs.get("queue"):
        parts.append(f"queue {needs['queue']}")
    if needs.get("project"):
        parts.append(f"project {needs['project']}")
    if needs.get("output_patterns"):
        parts.append("files " + " ".join(needs["output_patterns"]))
    env = needs.get("environment") or {}
    if env:
        parts.append(", ".join(f"{k}={v}" for k, v in sorted(env.items())))
    return ", ".join(parts)

"""The OpenAPI 3 schema of the HTTP API (scheduler/http/views.py), served at
/api/v1/openapi.json. Written by hand next to the views; a schemathesis run in
the test suite checks the two agree and that no request makes a server error."""

from __future__ import annotations

from typing import Any

from scheduler.models import OutputFile, Run

_ERROR = {"$ref": "#/components/schemas/Error"}
_DATETIME = {"type": ["string", "null"], "format": "date-time"}


def _errors(*codes: int) -> dict[str, Any]:
    text = {
        400: "Bad input; the error says what is wrong.",
        401: "No token, or a token that is not valid.",
        403: "The token's user may not do this.",
        404: "No such run, definition or file (or one the user may not see).",
        405: "Method not allowed.",
        413: "Request body too large.",
    }
    return {
        str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}}}
        for c in codes
    }


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_PAGE = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0}},
]
_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "integer"}}
_FILE_ID = {"name": "file_id", "in": "path", "required": True, "schema": {"type": "integer"}}


def schema(server_url: str = "/api/v1/") -> dict[str, Any]:
    run_ref = {"$ref": "#/components/schemas/Run"}
    file_ref = {"$ref": "#/components/schemas/File"}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "DjangoTaskScheduler API",
            "version": "1",
            "description": "Queue runs of task definitions, read their state, fetch their "
            "files, cancel them. Authenticate with 'Authorization: Bearer <token>' (tokens "
            "are issued in the admin). The token's user sees what it sees in the admin.",
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "paths": {
            "/definitions/": {
                "get": {
                    "operationId": "listDefinitions",
                    "summary": "The task definitions the user may see, with their parameters.",
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["results"],
                                "properties": {
                                    "results": {
                                        "type": "array",
                                        "items": {"$ref": "#/components/schemas/Definition"},
                                    }
                                },
                            },
                            "The definitions.",
                        ),
                        **_errors(401, 403),
                    },
                }
            },
            "/runs/": {
                "get": {
                    "operationId": "listRuns",
                    "summary": "Runs, newest first; 'next' links the following page.",
                    "parameters": [
                        {
                            "name": "state",
                            "in": "query",
                            "schema": {"type": "string", "enum": list(Run.State.values)},
                        },
                        {"name": "definition", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "since",
                            "in": "query",
                            "description": "Queued at or after (ISO 8601 with a zone).",
                            "schema": {"type": "string", "format": "date-time"},
                        },
                        {
                            "name": "until",
                            "in": "query",
                            "description": "Queued before (ISO 8601 with a zone).",
                            "schema": {"type": "string", "format": "date-time"},
                        },
                        *_PAGE,
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["results", "next"],
                                "properties": {
                                    "results": {"type": "array", "items": run_ref},
                                    "next": {"type": ["string", "null"]},
                                },
                            },
                            "A page of runs.",
                        ),
                        **_errors(400, 401, 403, 404),
                    },
                },
                "post": {
                    "operationId": "queueRun",
                    "summary": "Queue a run of a definition.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["definition"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "definition": {"type": "string", "minLength": 1},
                                        "parameters": {"type": "object"},
                                        "resource": {"type": ["string", "null"]},
                                        "run_at": {
                                            "type": ["string", "null"],
                                            "format": "date-time",
                                        },
                                        "needs": {
                                            "type": ["object", "null"],
                                            "additionalProperties": False,
                                            "properties": {
                                                "cores": {"type": "integer", "minimum": 1},
                                                "processes_per_host": {
                                                    "type": "integer",
                                                    "minimum": 1,
                                                },
                                                "memory_mb": {"type": "integer", "minimum": 1},
                                                "gpus": {"type": "integer", "minimum": 0},
                                                "mpi": {"type": "boolean"},
                                                "wall_time_seconds": {
                                                    "type": "integer",
                                                    "minimum": 1,
                                                },
                                                "queue": {"type": "string"},
                                                "project": {"type": "string"},
                                                "environment": {
                                                    "type": "object",
                                                    "additionalProperties": {"type": "string"},
                                                },
                                            },
                                        },
                                        "inputs": {
                                            "type": "array",
                                            "description": "Earlier runs' output files to "
                                            "stage into inputs/. Uploads go as "
                                            "multipart/form-data: this object in the field "
                                            "'request', each file in a field 'inputs'.",
                                            "items": {
                                                "type": "object",
                                                "required": ["output_file"],
                                                "additionalProperties": False,
                                                "properties": {
                                                    "output_file": {"type": "integer"},
                                                    "name": {"type": "string"},
                                                },
                                            },
                                        },
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "201": _json(run_ref, "The queued run."),
                        **_errors(400, 401, 403, 404, 413),
                    },
                },
            },
            "/runs/{run_id}/": {
                "get": {
                    "operationId": "getRun",
                    "summary": "A run with its last 200 messages and its first 50 files "
                    "(files_next pages on through the files).",
                    "parameters": [_RUN_ID],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/RunDetail"}, "The run."),
                        **_errors(401, 403, 404),
                    },
                }
            },
            "/runs/{run_id}/cancel/": {
                "post": {
                    "operationId": "cancelRun",
                    "summary": "Cancel: at once if queued, else the poller ends the job.",
                    "parameters": [_RUN_ID],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["result", "run"],
                                "properties": {
                                    "result": {
                                        "type": "string",
                                        "enum": ["cancelled", "requested", "final"],
                                    },
                                    "run": run_ref,
                                },
                            },
                            "What happened.",
                        ),
                        **_errors(401, 403, 404),
                    },
                }
            },
            "/runs/{run_id}/files/": {
                "get": {
                    "operationId": "listFiles",
                    "summary": "A page of the run's output files, stdout and stderr.",
                    "parameters": [
                        _RUN_ID,
                        *_PAGE,
                    ],
                    "responses": {
                        "200": _json(
                            {
                                "type": "object",
                                "required": ["results", "next"],
                                "properties": {
                                    "results": {"type": "array", "items": file_ref},
                                    "next": {"type": ["string", "null"]},
                                },
                            },
                            "A page of the files.",
                        ),
                        **_errors(400, 401, 403, 404),
                    },
                }
            },
            "/runs/{run_id}/files/{file_id}/download/": {
                "get": {
                    "operationId": "downloadFile",
                    "summary": "The file's bytes (attachment; Range requests resume).",
                    "parameters": [_RUN_ID, _FILE_ID],
                    "responses": {
                        "200": {
                            "description": "The whole file.",
                            "content": {"*/*": {"schema": {}}},
                        },
                        "206": {
                            "description": "The requested range.",
                            "content": {"*/*": {"schema": {}}},
                        },
                        "416": {"description": "The range lies outside the file."},
                        **_errors(401, 403, 404),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}, "detail": {}},
                },
                "Run": {
                    "type": "object",
                    "required": ["run_id", "definition", "state", "progress", "url"],
                    "properties": {
                        "run_id": {"type": "integer"},
                        "definition": {"type": "string"},
                        "state": {"type": "string", "enum": list(Run.State.values)},
                        "progress": {"type": "integer", "minimum": 0, "maximum": 100},
                        "message": {"type": "string"},
                        "exit_code": {"type": ["integer", "null"]},
                        "error": {"type": "string"},
                        "attempt": {"type": "integer"},
                        "due_at": _DATETIME,
                        "queued_at": _DATETIME,
                        "started_at": _DATETIME,
                        "finished_at": _DATETIME,
                        "needs": {"type": "object"},
                        "core_hours": {"type": ["number", "null"]},
                        "cost": {"type": ["number", "null"]},
                        "url": {"type": "string"},
                    },
                },
                "RunDetail": {
                    "allOf": [
                        run_ref,
                        {
                            "type": "object",
                            "required": ["messages", "files"],
                            "properties": {
                                "message_count": {"type": "integer"},
                                "messages_dropped": {"type": "integer"},
                                "file_count": {"type": "integer"},
                                "files_next": {"type": ["string", "null"]},
                                "messages": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "time": _DATETIME,
                                            "level": {"type": "string"},
                                            "text": {"type": "string"},
                                            "progress": {"type": ["integer", "null"]},
                                        },
                                    },
                                },
                                "files": {"type": "array", "items": file_ref},
                            },
                        },
                    ]
                },
                "File": {
                    "type": "object",
                    "required": ["id", "name", "kind", "size", "sha256", "download_url"],
                    "properties": {
                        "id": {"type": "integer"},
                        "name": {"type": "string"},
                        "kind": {"type": "string", "enum": list(OutputFile.Kind.values)},
                        "size": {"type": "integer"},
                        "sha256": {"type": "string"},
                        "content_type": {"type": "string"},
                        "created_at": _DATETIME,
                        "download_url": {"type": "string"},
                    },
                },
                "Definition": {
                    "type": "object",
                    "required": ["name", "parameters", "can_run"],
                    "properties": {
                        "name": {"type": "string"},
                        "description": {"type": "string"},
                        "enabled": {"type": "boolean"},
                        "can_run": {"type": "boolean"},
                        "parameters": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "name": {"type": "string"},
                                    "type": {"type": "string"},
                                    "default": {"type": "string"},
                                    "required": {"type": "boolean"},
                                    "help": {"type": "string"},
                                    "choices": {"type": "array"},
                                },
                            },
                        },
                    },
                },
            },
        },
    }

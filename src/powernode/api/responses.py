"""JSON responses for the hot paths, encoded once by orjson.

FastAPI would validate a returned object against the route's response model and encode it
again; routes serving many objects build documents of the response model's shape, return
`json_response(...)` and declare `response_model` for the OpenAPI document.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from fastapi import Response

_OPTIONS = orjson.OPT_UTC_Z  # "...Z" for UTC, as pydantic writes it


def _default(value: Any) -> Any:
    # asyncpg hands back its own UUID class; orjson only knows uuid.UUID itself.
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def json_response(document: Any, status_code: int = 200) -> Response:
    return Response(
        content=orjson.dumps(document, default=_default, option=_OPTIONS),
        status_code=status_code,
        media_type="application/json",
    )

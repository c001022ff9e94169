"""Shaping errors into HTTP responses: one body shape for every route (OpenAI's error object)."""

from __future__ import annotations

import json

from sluice.errors import SluiceError


def error_response_parts(error: SluiceError, request_id: str | None) -> tuple[int, dict[str, str], str]:
    headers = {"Content-Type": "application/json", **error.headers}
    if request_id:
        headers["X-Request-Id"] = request_id
    return error.status, headers, json.dumps(error.body(request_id))

"""Request and response bodies of pass-through calls: content types and decoding."""

from __future__ import annotations

import base64
import json
from typing import Any, Literal

from sluice.errors import UnsupportedMediaType, ValidationFailed

Encoding = Literal["json", "text", "base64"]


def media_type(content_type: str | None) -> str | None:
    if not content_type:
        return None
    return content_type.split(";", 1)[0].strip().lower() or None


def choose_content_type(requested: str | None, allowed: tuple[str, ...]) -> str:
    wanted = media_type(requested)
    if wanted is None:
        return allowed[0]
    for candidate in allowed:
        if media_type(candidate) == wanted:
            return candidate
    raise UnsupportedMediaType(
        f"Content-Type '{wanted}' is not accepted by this model; send one of: {', '.join(allowed)}.",
        param="Content-Type",
    )


def is_json(content_type: str | None) -> bool:
    kind = media_type(content_type) or ""
    return kind == "application/json" or kind.endswith("+json")


def check_json_body(body: bytes, content_type: str | None) -> None:
    """A body sent as JSON must be JSON: the model would only reject it later, and the client is to blame."""
    if not body or not is_json(content_type):
        return
    try:
        json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise ValidationFailed(
            f"The body is declared {media_type(content_type)} but is not valid JSON ({exc}).",
            param="body",
            details=[{"field": "body", "message": "not valid JSON"}],
        ) from None


def decode_output(payload: bytes, content_type: str | None) -> tuple[Any, Encoding]:
    kind = media_type(content_type) or ""
    if kind.endswith("json"):
        try:
            return json.loads(payload), "json"
        except ValueError:
            pass
    if kind.startswith("text/") or kind.endswith(("json", "jsonlines", "csv", "xml")):
        try:
            return payload.decode("utf-8"), "text"
        except UnicodeDecodeError:
            pass
    return base64.b64encode(payload).decode("ascii"), "base64"

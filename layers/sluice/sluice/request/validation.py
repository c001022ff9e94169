"""Turning a pydantic failure on a body parsed inside the domain into a 422 that names each field."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from sluice.errors import ValidationFailed

M = TypeVar("M", bound=BaseModel)


def field_errors(errors: list[Any], prefix: tuple[str, ...] = ()) -> list[dict[str, str]]:
    described = []
    for err in errors:
        if err.get("type") == "json_invalid":
            described.append({"field": "body", "message": "not valid JSON; send a JSON object"})
            continue
        loc = prefix + tuple(str(part) for part in err.get("loc", ()))
        described.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    return described


def validation_failed(fields: list[dict[str, str]]) -> ValidationFailed:
    summary = "; ".join(f"{item['field']}: {item['message']}" for item in fields[:5])
    return ValidationFailed(
        f"The request is invalid: {summary}", param=fields[0]["field"] if fields else None, details=fields
    )


def parse_json_body(model: type[M], body: bytes) -> M:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_failed(field_errors(exc.errors(), ("body",))) from None


def parse_query(model: type[M], params: dict[str, str] | None) -> M:
    """A query string into its model; a bad parameter is a 422 naming `query.<name>`."""
    try:
        return model.model_validate(params or {})
    except ValidationError as exc:
        raise validation_failed(field_errors(exc.errors(), ("query",))) from None

"""The OpenAPI document and its browsable page, built on demand from the API's route table.

Imported only by the docs route: building JSON schemas is work no inference request should pay for,
at cold start or per call.
"""

from __future__ import annotations

import html
import json
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class RouteDoc:
    method: str
    path: str  # Powertools syntax: /v1/models/<model>
    summary: str
    request: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    # A raw body forwarded as is (invoke): documented by media type, not by schema.
    raw_body: bool = False
    public: bool = False
    # Request headers the route reads: (name, description).
    headers: tuple[tuple[str, str], ...] = ()
    # The status of a success (202 for an accepted job).
    success_status: int = 200

    @property
    def openapi_path(self) -> str:
        return re.sub(r"<(\w+)>", r"{\1}", self.path)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str
    request_id: str | None = None
    details: Any = None


class ErrorBody(BaseModel):
    """Every error on every route (OpenAI's error object)."""

    error: ErrorDetail


def openapi_document(routes: list[RouteDoc], *, title: str, version: str, description: str) -> dict[str, Any]:
    models = {model for route in routes for model in (route.request, route.response) if model is not None}
    models.add(ErrorBody)
    keyed = [(model, "validation") for model in sorted(models, key=lambda m: m.__name__)]
    refs, definitions = models_json_schema(keyed, ref_template=REF)
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(route.openapi_path, {})[route.method.lower()] = _operation(route, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version, "description": description},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "bearerKey": {"type": "http", "scheme": "bearer", "description": "Sluice API key (sk-sluice-...)"},
                "sigv4": {"type": "apiKey", "in": "header", "name": "Authorization", "description": "AWS SigV4"},
            },
        },
    }


def _operation(route: RouteDoc, refs: dict) -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": refs[(ErrorBody, "validation")]}}}
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{re.sub(r'[^a-z0-9]+', '_', route.openapi_path.lower()).strip('_')}",
        "responses": {
            "default": {"description": "Error", **error},
            **{str(status): {"description": reason, **error} for status, reason in _error_statuses(route)},
        },
        "security": [] if route.public else [{"bearerKey": []}, {"sigv4": []}],
    }
    success: dict[str, Any] = {"description": "OK"}
    if route.response is not None:
        success["content"] = {"application/json": {"schema": refs[(route.response, "validation")]}}
    operation["responses"][str(route.success_status)] = success
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(name)}
        for name in re.findall(r"<(\w+)>", route.path)
    ]
    parameters += [
        {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": description}
        for name, description in route.headers
    ]
    if route.raw_body:
        operation["requestBody"] = {
            "required": True,
            "description": "Forwarded to the model's backend unchanged, with the model's content type",
            "content": {"application/json": {"schema": {}}, "text/csv": {"schema": {"type": "string"}}},
        }
    elif route.request is not None:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": refs[(route.request, "validation")]}},
        }
    if parameters:
        operation["parameters"] = parameters
    return operation


# What a route can answer besides success, so response checks (schemathesis) and clients know every status.
_COMMON_ERRORS = ((400, "Invalid request"), (422, "Validation failed"), (429, "Throttled"), (503, "Unavailable"))
_AUTH_ERRORS = ((401, "Missing or invalid credential"), (403, "Not allowed, or no such route"))
_MODEL_ERRORS = (
    (404, "Model or resource not found"),
    (409, "Conflict"),
    (413, "Payload too large"),
    (415, "Unsupported media type"),
    (502, "The model or its backend failed"),
    (504, "The backend did not answer in time"),
)


def _path_schema(name: str) -> dict[str, Any]:
    # Ids the API issues have one form; stating it lets generated requests target real-looking ids.
    from sluice.jobs.views import JOB_ID_PATTERN
    from sluice.registry.models import GROUP_PATTERN

    # A registry version is SageMaker's ModelPackageVersion: a positive integer.
    patterns = {"job_id": JOB_ID_PATTERN, "group": GROUP_PATTERN, "version": r"^[1-9][0-9]{0,9}$"}
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if name in patterns:
        schema["pattern"] = patterns[name]
    return schema


def _error_statuses(route: RouteDoc) -> list[tuple[int, str]]:
    statuses = list(_COMMON_ERRORS)
    if not route.public:
        statuses += _AUTH_ERRORS + _MODEL_ERRORS
    return sorted(statuses)


def swagger_page(document: dict[str, Any]) -> str:
    """Swagger UI with the document inline, so the page needs no second authenticated fetch."""
    # JSON is valid JavaScript; only a closing tag inside a string could end the script early.
    spec = json.dumps(document).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{html.escape(document["info"]["title"])} API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{dom_id: "#ui", spec: {spec}}});</script>
</body></html>"""

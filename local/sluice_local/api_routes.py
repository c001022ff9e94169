"""The REST API as template.yaml declares it: routes, their function, their authorizer, gateway responses.

Read from the SAM template itself (function `Api` events and the `AWS::Serverless::Api` resource),
so a route added to the template is served locally with no change here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse


@dataclass(frozen=True)
class Authorizer:
    function: str  # logical id of the authorizer function
    identity_headers: tuple[str, ...]
    cache_ttl_seconds: int


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # API Gateway resource path, e.g. /v1/models/{model}/invoke
    function: str  # logical id
    authorizer: Authorizer | None
    pattern: re.Pattern = field(compare=False)

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method != self.method and self.method != "ANY":
            return None
        found = self.pattern.fullmatch(path)
        return found.groupdict() if found else None


@dataclass(frozen=True)
class ApiDefinition:
    logical_id: str
    stage: str
    routes: list[Route]
    # Gateway response type -> (status code or None, JSON template).
    gateway_responses: dict[str, tuple[int | None, str]]
    binary_media_types: tuple[str, ...]

    def find(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        # Literal segments win over {parameters}, as in API Gateway.
        for route in sorted(self.routes, key=lambda r: r.path.count("{")):
            params = route.match(method, path)
            if params is not None:
                return route, params
        return None


def _pattern(path: str) -> re.Pattern:
    regex = re.sub(r"\\\{(\w+)\\\+\\\}", r"(?P<\1>.+)", re.escape(path))
    regex = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", regex)
    return re.compile(regex)


def _ref(value: Any) -> str | None:
    """The logical id a `!Ref X` / `!GetAtt X.Arn` points at."""
    if isinstance(value, dict):
        if "Ref" in value:
            return value["Ref"]
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return (target.split(".")[0] if isinstance(target, str) else target[0]) or None
    return None


def _resolve(value: Any, parameters: dict[str, Any]) -> Any:
    ref = _ref(value)
    return parameters.get(ref, value) if ref else value


def load_api(template_path: Path, api_logical_id: str, parameters: dict[str, Any] | None = None) -> ApiDefinition:
    template = yaml_parse(template_path.read_text())
    defaults = {name: spec.get("Default") for name, spec in template.get("Parameters", {}).items()}
    values = {**defaults, **(parameters or {})}
    resources = template["Resources"]
    api = resources[api_logical_id]["Properties"]
    auth = api.get("Auth") or {}
    authorizers = {
        name: Authorizer(
            function=_ref(spec["FunctionArn"]) or "",
            identity_headers=tuple((spec.get("Identity") or {}).get("Headers", ["Authorization"])),
            cache_ttl_seconds=int(_resolve((spec.get("Identity") or {}).get("ReauthorizeEvery", 300), values)),
        )
        for name, spec in (auth.get("Authorizers") or {}).items()
    }
    default_authorizer = authorizers.get(auth.get("DefaultAuthorizer", ""))
    routes = []
    for logical_id, resource in resources.items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        for event in (resource.get("Properties", {}).get("Events") or {}).values():
            props = event.get("Properties") or {}
            if event.get("Type") != "Api" or _ref(props.get("RestApiId")) != api_logical_id:
                continue
            named = (props.get("Auth") or {}).get("Authorizer")
            authorizer = None if named == "NONE" else authorizers.get(named, default_authorizer)
            method = props["Method"].upper()
            routes.append(Route(method, props["Path"], logical_id, authorizer, _pattern(props["Path"])))
    responses = {
        kind: (
            int(spec["StatusCode"]) if spec.get("StatusCode") else None,
            (spec.get("ResponseTemplates") or {}).get("application/json", ""),
        )
        for kind, spec in (api.get("GatewayResponses") or {}).items()
    }
    return ApiDefinition(
        logical_id=api_logical_id,
        stage=str(_resolve(api.get("StageName", "Prod"), values)),
        routes=routes,
        gateway_responses=responses,
        binary_media_types=tuple(t.replace("~1", "/") for t in api.get("BinaryMediaTypes") or ()),
    )

"""The Lambda authorizer's decision for a bearer key: allow with tenant context, or 401."""

from __future__ import annotations

from typing import Any

from sluice.auth.keys import hash_key
from sluice.auth.roles import parse_role, tenant_problem


class Unauthorized(Exception):
    """API Gateway turns an authorizer failing with exactly "Unauthorized" into a 401.

    `reason` is for the log only: the caller learns nothing beyond the 401."""

    def __init__(self, reason: str = "no valid key") -> None:
        super().__init__("Unauthorized")
        self.reason = reason


def bearer_token(headers: dict[str, str] | None) -> str | None:
    for name, value in (headers or {}).items():
        if name.lower() == "authorization" and value:
            scheme, _, token = value.strip().partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def api_wide_resource(method_arn: str) -> str:
    """Allow every route of the stage: API Gateway caches one policy per key across routes."""
    # arn:aws:execute-api:region:account:api-id/stage/METHOD/path...
    prefix, _, path = method_arn.partition("/")
    stage = path.split("/", 1)[0]
    return f"{prefix}/{stage}/*"


def authorize(event: dict[str, Any], *, dynamodb: Any, table: str) -> dict[str, Any]:
    token = bearer_token(event.get("headers"))
    if token is None:
        raise Unauthorized("no bearer token")
    item = dynamodb.get_item(TableName=table, Key={"key_hash": {"S": hash_key(token)}}).get("Item")
    if not item or item.get("status", {}).get("S") != "active":
        raise Unauthorized("unknown or revoked key")
    tenant = item["tenant"]["S"]
    # A record written around tools/keys.py (by hand, an old tool) must not smuggle in an odd identity.
    problem = tenant_problem(tenant)
    if problem:
        raise Unauthorized(f"stored key {item.get('key_id', {}).get('S', '?')} has an invalid tenant: {problem}")
    try:
        role = parse_role(item.get("role", {}).get("S"))
    except ValueError as error:
        raise Unauthorized(f"stored key {item.get('key_id', {}).get('S', '?')} has an invalid role: {error}") from None
    return {
        "principalId": tenant,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [
                {"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": api_wide_resource(event["methodArn"])}
            ],
        },
        "context": {"tenant": tenant, "key_id": item["key_id"]["S"], "auth": "api_key", "role": role.value},
        "usageIdentifierKey": item["usage_key_value"]["S"],
    }

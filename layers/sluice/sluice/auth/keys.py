"""API keys: generated once, shown once, stored only as a SHA-256 hash.

Keys are 256 random bits, so a fast unsalted hash is enough: there is nothing to brute-force.
Each key belongs to a tenant and to an API Gateway usage plan (per-tenant throttling and quota),
through an API Gateway API key that only the authorizer ever presents.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sluice.auth.roles import Role, parse_role, validate_tenant

KEY_PREFIX = "sk-sluice-"
KEY_ID_INDEX = "KeyIdIndex"


class KeyNotFound(KeyError):
    """No API key with that id. A KeyError, whose message prints without KeyError's quotes."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "API key not found"


def hash_key(plain_key: str) -> str:
    return hashlib.sha256(plain_key.encode()).hexdigest()


def new_plain_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class ApiKeyRecord:
    key_id: str
    tenant: str
    name: str
    status: str
    created_at: str
    usage_plan_id: str
    key_hint: str
    revoked_at: str | None = None
    role: str = Role.CONSUMER.value

    @classmethod
    def from_item(cls, item: dict[str, Any]) -> ApiKeyRecord:
        return cls(
            key_id=item["key_id"]["S"],
            tenant=item["tenant"]["S"],
            name=item.get("name", {}).get("S", ""),
            status=item["status"]["S"],
            created_at=item["created_at"]["S"],
            usage_plan_id=item.get("usage_plan_id", {}).get("S", ""),
            key_hint=item.get("key_hint", {}).get("S", ""),
            revoked_at=item.get("revoked_at", {}).get("S"),
            # Keys created before roles existed are consumers.
            role=item.get("role", {}).get("S") or Role.CONSUMER.value,
        )


@dataclass(frozen=True)
class CreatedKey:
    plain_key: str
    record: ApiKeyRecord


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def create_key(
    *,
    dynamodb: Any,
    apigateway: Any,
    table: str,
    tenant: str,
    usage_plan_id: str,
    name: str = "",
    plain_key: str | None = None,
    role: str = Role.CONSUMER.value,
) -> CreatedKey:
    """Create a key for `tenant` (sluice.auth.roles.TENANT_PATTERN) with `role` on `usage_plan_id`;
    `plain_key` lets local mode fix a known key."""
    validate_tenant(tenant)
    key_role = parse_role(role)
    if not usage_plan_id or not usage_plan_id.strip():
        raise ValueError("usage_plan_id must not be empty")
    plain_key = plain_key or new_plain_key()
    key_id = "key_" + secrets.token_hex(6)
    usage_key = apigateway.create_api_key(
        name=f"sluice-{tenant}-{key_id}",
        enabled=True,
        value=secrets.token_urlsafe(30),
        tags={"sluice:tenant": tenant, "sluice:key-id": key_id},
    )
    record = ApiKeyRecord(
        key_id=key_id,
        tenant=tenant,
        name=name,
        status="active",
        created_at=_now(),
        usage_plan_id=usage_plan_id,
        key_hint=plain_key[: len(KEY_PREFIX) + 4] + "...",
        role=key_role.value,
    )
    try:
        apigateway.create_usage_plan_key(usagePlanId=usage_plan_id, keyId=usage_key["id"], keyType="API_KEY")
        dynamodb.put_item(
            TableName=table,
            Item={
                "key_hash": {"S": hash_key(plain_key)},
                "key_id": {"S": key_id},
                "tenant": {"S": tenant},
                "name": {"S": name},
                "status": {"S": "active"},
                "created_at": {"S": record.created_at},
                "usage_plan_id": {"S": usage_plan_id},
                "usage_key_id": {"S": usage_key["id"]},
                "usage_key_value": {"S": usage_key["value"]},
                "key_hint": {"S": record.key_hint},
                "role": {"S": key_role.value},
            },
            ConditionExpression="attribute_not_exists(key_hash)",
        )
    except Exception:
        # A wrong plan id, a missing table or an already stored key: leave no orphan gateway key behind.
        apigateway.delete_api_key(apiKey=usage_key["id"])
        raise
    return CreatedKey(plain_key=plain_key, record=record)


def list_keys(*, dynamodb: Any, table: str, tenant: str | None = None) -> list[ApiKeyRecord]:
    records: list[ApiKeyRecord] = []
    for page in dynamodb.get_paginator("scan").paginate(TableName=table):
        records.extend(ApiKeyRecord.from_item(item) for item in page["Items"])
    if tenant:
        records = [record for record in records if record.tenant == tenant]
    return sorted(records, key=lambda record: (record.tenant, record.created_at))


def revoke_key(*, dynamodb: Any, apigateway: Any, table: str, key_id: str) -> ApiKeyRecord:
    found = dynamodb.query(
        TableName=table,
        IndexName=KEY_ID_INDEX,
        KeyConditionExpression="key_id = :id",
        ExpressionAttributeValues={":id": {"S": key_id}},
    )["Items"]
    if not found:
        raise KeyNotFound(f"no API key with id {key_id}")
    key_hash = found[0]["key_hash"]["S"]
    item = dynamodb.update_item(
        TableName=table,
        Key={"key_hash": {"S": key_hash}},
        # Revoking twice keeps the first revocation time.
        UpdateExpression="SET #s = :revoked, revoked_at = if_not_exists(revoked_at, :now)",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":revoked": {"S": "revoked"}, ":now": {"S": _now()}},
        ReturnValues="ALL_NEW",
    )["Attributes"]
    # The authorizer already refuses the key; disabling the usage key too stops quota use at the gateway.
    apigateway.update_api_key(
        apiKey=item["usage_key_id"]["S"], patchOperations=[{"op": "replace", "path": "/enabled", "value": "false"}]
    )
    return ApiKeyRecord.from_item(item)

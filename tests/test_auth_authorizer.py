"""The authorizer Lambda with API Gateway's REQUEST events: an Allow policy with the tenant, or exactly "Unauthorized".

Keys are created with sluice.auth.keys in moto DynamoDB and API Gateway, as tools/keys.py creates them.
"""

from __future__ import annotations

import os
from types import ModuleType, SimpleNamespace

import boto3
import pytest

from sluice.auth import keys
from tests.auth_support import create_keys_table
from tests.conftest import load_event, load_handler

TABLE = os.environ["SLUICE_API_KEYS_TABLE"]
SAMPLE_KEY = "sk-sluice-SAMPLEonlyNotARealKey-9f3kQ2vXb7LmN4pR8tYw1zC6"  # the key in events/authorizer/*.json
STAGE_WIDE = "arn:aws:execute-api:us-east-1:123456789012:abc123/v1/*"


@pytest.fixture
def authorizer(aws) -> ModuleType:
    """The handler, imported while moto is active, its module-scope client checked to reach moto."""
    from moto.core.models import patch_client

    handler = load_handler("authorizer")
    # moto intercepts a client only if botocore's session knew moto when the client was built. Importing the
    # handler inside mock_aws guarantees that; patch_client covers another test having imported it first.
    patch_client(handler.dynamodb)
    assert handler.TABLE == TABLE
    return handler


@pytest.fixture
def backend(authorizer) -> SimpleNamespace:
    dynamodb = boto3.client("dynamodb")
    apigateway = boto3.client("apigateway")
    create_keys_table(dynamodb)
    plan_id = apigateway.create_usage_plan(name="sluice-default")["id"]
    return SimpleNamespace(dynamodb=dynamodb, apigateway=apigateway, plan_id=plan_id)


def create(backend: SimpleNamespace, plain_key: str = SAMPLE_KEY, tenant: str = "acme") -> keys.CreatedKey:
    return keys.create_key(
        dynamodb=backend.dynamodb,
        apigateway=backend.apigateway,
        table=TABLE,
        tenant=tenant,
        usage_plan_id=backend.plan_id,
        plain_key=plain_key,
    )


def gateway_key_value(backend: SimpleNamespace, created: keys.CreatedKey) -> str:
    (plan_key,) = backend.apigateway.get_usage_plan_keys(usagePlanId=backend.plan_id)["items"]
    gateway_key = backend.apigateway.get_api_key(apiKey=plan_key["id"], includeValue=True)
    assert gateway_key["tags"]["sluice:key-id"] == created.record.key_id
    return gateway_key["value"]


def assert_unauthorized(authorizer: ModuleType, event: dict, lambda_context) -> None:
    with pytest.raises(Exception) as raised:  # noqa: PT011 - API Gateway only sees the message
        authorizer.lambda_handler(event, lambda_context)
    assert str(raised.value) == "Unauthorized"


def test_events_are_request_authorizer_events():
    for name in ("valid-key", "missing-header", "malformed-header", "lowercase-header"):
        event = load_event(f"authorizer/{name}.json")
        assert event["type"] == "REQUEST"
        assert event["methodArn"].startswith("arn:aws:execute-api:us-east-1:123456789012:abc123/v1/")
        expected = {"resource", "path", "httpMethod", "headers", "multiValueHeaders", "queryStringParameters"}
        assert expected | {"pathParameters", "stageVariables", "requestContext"} <= set(event)
        assert {name: [value] for name, value in event["headers"].items()} == event["multiValueHeaders"]


def test_valid_key_is_allowed_on_the_whole_stage(authorizer, backend, lambda_context):
    created = create(backend)

    decision = authorizer.lambda_handler(load_event("authorizer/valid-key.json"), lambda_context)

    assert decision["principalId"] == "acme"
    assert decision["policyDocument"] == {
        "Version": "2012-10-17",
        "Statement": [{"Action": "execute-api:Invoke", "Effect": "Allow", "Resource": STAGE_WIDE}],
    }
    assert decision["context"] == {
        "tenant": "acme",
        "key_id": created.record.key_id,
        "auth": "api_key",
        "role": "consumer",
    }
    # API Gateway meters the usage plan by this value (ApiKeySourceType AUTHORIZER).
    assert decision["usageIdentifierKey"] == gateway_key_value(backend, created)
    assert decision["usageIdentifierKey"] != SAMPLE_KEY


def test_policy_resource_is_stage_wide_whatever_the_route(authorizer, backend, lambda_context):
    create(backend)
    event = load_event("authorizer/valid-key.json")
    event["methodArn"] = "arn:aws:execute-api:us-east-1:123456789012:abc123/v1/GET/v1/models/acme-chat"

    decision = authorizer.lambda_handler(event, lambda_context)

    assert decision["policyDocument"]["Statement"][0]["Resource"] == STAGE_WIDE


def test_context_values_are_strings_as_api_gateway_requires(authorizer, backend, lambda_context):
    create(backend)

    decision = authorizer.lambda_handler(load_event("authorizer/valid-key.json"), lambda_context)

    assert all(isinstance(value, str) for value in decision["context"].values())


def test_the_key_decides_the_tenant(authorizer, backend, lambda_context):
    create(backend, tenant="acme")
    other = "sk-sluice-another-key-for-globex-00000000000000000000000"
    create(backend, plain_key=other, tenant="globex")
    event = load_event("authorizer/valid-key.json")
    event["headers"]["Authorization"] = f"Bearer {other}"

    decision = authorizer.lambda_handler(event, lambda_context)

    assert decision["context"]["tenant"] == "globex"


def test_missing_header_is_unauthorized(authorizer, backend, lambda_context):
    create(backend)

    assert_unauthorized(authorizer, load_event("authorizer/missing-header.json"), lambda_context)


def test_no_headers_at_all_is_unauthorized(authorizer, backend, lambda_context):
    event = load_event("authorizer/missing-header.json")
    event["headers"] = None
    event["multiValueHeaders"] = None

    assert_unauthorized(authorizer, event, lambda_context)


def test_malformed_header_is_unauthorized(authorizer, backend, lambda_context):
    create(backend)

    assert_unauthorized(authorizer, load_event("authorizer/malformed-header.json"), lambda_context)


@pytest.mark.parametrize(
    "value", ["Bearer", "Bearer ", "Bearer    ", SAMPLE_KEY, f"Token {SAMPLE_KEY}", f"Basic {SAMPLE_KEY}", ""]
)
def test_other_malformed_headers_are_unauthorized(authorizer, backend, lambda_context, value):
    create(backend)
    event = load_event("authorizer/valid-key.json")
    event["headers"]["Authorization"] = value

    assert_unauthorized(authorizer, event, lambda_context)


def test_unknown_key_is_unauthorized(authorizer, backend, lambda_context):
    create(backend, plain_key="sk-sluice-some-other-key-000000000000000000000000000")

    assert_unauthorized(authorizer, load_event("authorizer/valid-key.json"), lambda_context)


def test_revoked_key_is_unauthorized(authorizer, backend, lambda_context):
    created = create(backend)
    event = load_event("authorizer/valid-key.json")
    assert authorizer.lambda_handler(event, lambda_context)["principalId"] == "acme"

    keys.revoke_key(dynamodb=backend.dynamodb, apigateway=backend.apigateway, table=TABLE, key_id=created.record.key_id)

    assert_unauthorized(authorizer, event, lambda_context)


def test_header_name_is_case_insensitive(authorizer, backend, lambda_context):
    created = create(backend)
    event = load_event("authorizer/lowercase-header.json")
    assert "authorization" in event["headers"]
    assert "Authorization" not in event["headers"]

    decision = authorizer.lambda_handler(event, lambda_context)

    assert decision["context"]["key_id"] == created.record.key_id
    assert decision["policyDocument"]["Statement"][0]["Resource"] == STAGE_WIDE


@pytest.mark.parametrize("scheme", ["bearer", "BEARER", "BeArEr"])
def test_bearer_scheme_is_case_insensitive(authorizer, backend, lambda_context, scheme):
    created = create(backend)
    event = load_event("authorizer/valid-key.json")
    event["headers"]["Authorization"] = f"{scheme} {SAMPLE_KEY}"

    decision = authorizer.lambda_handler(event, lambda_context)

    assert decision["context"]["key_id"] == created.record.key_id


def test_surrounding_whitespace_is_ignored(authorizer, backend, lambda_context):
    create(backend)
    event = load_event("authorizer/valid-key.json")
    event["headers"]["Authorization"] = f"  Bearer   {SAMPLE_KEY}  "

    assert authorizer.lambda_handler(event, lambda_context)["principalId"] == "acme"


def test_the_key_itself_is_case_sensitive(authorizer, backend, lambda_context):
    create(backend)
    event = load_event("authorizer/valid-key.json")
    event["headers"]["Authorization"] = f"Bearer {SAMPLE_KEY.upper()}"

    assert_unauthorized(authorizer, event, lambda_context)


# --- roles and tenant names ---------------------------------------------------------------------


def test_an_operator_key_carries_its_role_to_the_api(authorizer, backend, lambda_context):
    keys.create_key(
        dynamodb=backend.dynamodb,
        apigateway=backend.apigateway,
        table=TABLE,
        tenant="platform",
        usage_plan_id=backend.plan_id,
        plain_key=SAMPLE_KEY,
        role="operator",
    )

    decision = authorizer.lambda_handler(load_event("authorizer/valid-key.json"), lambda_context)

    assert decision["context"]["role"] == "operator"
    assert decision["context"]["tenant"] == "platform"


def test_a_key_stored_before_roles_existed_is_a_consumer(authorizer, backend, lambda_context):
    create(backend)
    item = backend.dynamodb.scan(TableName=TABLE)["Items"][0]
    backend.dynamodb.update_item(
        TableName=TABLE,
        Key={"key_hash": item["key_hash"]},
        UpdateExpression="REMOVE #r",
        ExpressionAttributeNames={"#r": "role"},
    )

    decision = authorizer.lambda_handler(load_event("authorizer/valid-key.json"), lambda_context)

    assert decision["context"]["role"] == "consumer"


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("tenant", "arn:aws:iam::123456789012:role/admin"),  # would pose as an IAM principal in catalog rules
        ("tenant", "acme/../globex"),
        ("tenant", "Acme"),
        ("tenant", "a" * 64),
        ("role", "admin"),
    ],
)
def test_a_stored_key_with_an_invalid_tenant_or_role_is_refused_and_logged(
    authorizer, backend, lambda_context, caplog, attribute, value
):
    create(backend)
    item = backend.dynamodb.scan(TableName=TABLE)["Items"][0]
    # Written around tools/keys.py (by hand, or by an older tool that did not check names).
    backend.dynamodb.update_item(
        TableName=TABLE,
        Key={"key_hash": item["key_hash"]},
        UpdateExpression="SET #a = :v",
        ExpressionAttributeNames={"#a": attribute},
        ExpressionAttributeValues={":v": {"S": value}},
    )

    assert_unauthorized(authorizer, load_event("authorizer/valid-key.json"), lambda_context)

    refused = [record for record in caplog.records if record.getMessage() == "request refused"]
    assert refused
    assert f"has an invalid {attribute}" in refused[-1].reason

"""API keys against moto DynamoDB and API Gateway: the library, then tools/keys.py end to end."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import asdict
from types import ModuleType, SimpleNamespace

import boto3
import pytest
from botocore.exceptions import ClientError

from sluice.auth import keys
from tests.auth_support import create_keys_table
from tests.conftest import ROOT

TABLE = os.environ["SLUICE_API_KEYS_TABLE"]


def load_tool() -> ModuleType:
    """tools/keys.py as a module, the file `python tools/keys.py` runs."""
    spec = importlib.util.spec_from_file_location("sluice_tool_keys", ROOT / "tools" / "keys.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = load_tool()


def create_usage_plan(apigateway, name: str = "sluice-default") -> str:
    """A REST API with one method, deployed to stage v1, and a usage plan on that stage."""
    api_id = apigateway.create_rest_api(name=f"{name}-api", apiKeySource="AUTHORIZER")["id"]
    root_id = apigateway.get_resources(restApiId=api_id)["items"][0]["id"]
    apigateway.put_method(restApiId=api_id, resourceId=root_id, httpMethod="GET", authorizationType="NONE")
    apigateway.put_integration(restApiId=api_id, resourceId=root_id, httpMethod="GET", type="MOCK")
    apigateway.create_deployment(restApiId=api_id, stageName="v1")
    return apigateway.create_usage_plan(
        name=name,
        apiStages=[{"apiId": api_id, "stage": "v1"}],
        throttle={"rateLimit": 10.0, "burstLimit": 20},
        quota={"limit": 100_000, "period": "MONTH"},
    )["id"]


@pytest.fixture
def backend(aws) -> SimpleNamespace:
    dynamodb = boto3.client("dynamodb")
    apigateway = boto3.client("apigateway")
    create_keys_table(dynamodb)
    return SimpleNamespace(dynamodb=dynamodb, apigateway=apigateway, plan_id=create_usage_plan(apigateway))


def create(backend: SimpleNamespace, tenant: str = "acme", **kwargs) -> keys.CreatedKey:
    return keys.create_key(
        dynamodb=backend.dynamodb,
        apigateway=backend.apigateway,
        table=TABLE,
        tenant=tenant,
        usage_plan_id=kwargs.pop("usage_plan_id", backend.plan_id),
        **kwargs,
    )


def scan(dynamodb, table: str = TABLE) -> list[dict]:
    return dynamodb.scan(TableName=table)["Items"]


# --- the library -------------------------------------------------------------------------------------------


def test_create_stores_only_the_hash(backend):
    created = create(backend, name="ci pipeline")

    assert created.plain_key.startswith("sk-sluice-")
    items = scan(backend.dynamodb)
    assert len(items) == 1
    assert created.plain_key not in json.dumps(items)
    item = items[0]
    assert item["key_hash"]["S"] == keys.hash_key(created.plain_key)
    assert item["tenant"]["S"] == "acme"
    assert item["name"]["S"] == "ci pipeline"
    assert item["status"]["S"] == "active"
    assert item["key_id"]["S"] == created.record.key_id


def test_create_keeps_a_short_hint_only(backend):
    created = create(backend)

    hint = created.record.key_hint
    assert hint == created.plain_key[: len("sk-sluice-") + 4] + "..."
    assert len(created.plain_key) > len(hint) + 30  # the hint gives away 4 of ~43 random characters
    assert scan(backend.dynamodb)[0]["key_hint"]["S"] == hint


def test_create_associates_a_gateway_key_with_the_usage_plan(backend):
    created = create(backend)

    item = scan(backend.dynamodb)[0]
    plan_keys = backend.apigateway.get_usage_plan_keys(usagePlanId=backend.plan_id)["items"]
    assert [plan_key["id"] for plan_key in plan_keys] == [item["usage_key_id"]["S"]]
    assert plan_keys[0]["type"] == "API_KEY"
    gateway_key = backend.apigateway.get_api_key(apiKey=item["usage_key_id"]["S"], includeValue=True)
    assert gateway_key["enabled"] is True
    assert gateway_key["value"] == item["usage_key_value"]["S"]
    # The gateway key is not the caller's key: only the authorizer ever presents it.
    assert gateway_key["value"] != created.plain_key
    assert gateway_key["tags"] == {"sluice:tenant": "acme", "sluice:key-id": created.record.key_id}
    assert created.record.usage_plan_id == backend.plan_id


def test_create_with_a_known_plain_key_for_local_mode(backend):
    created = create(backend, plain_key="sk-sluice-local-development-key-0000000000")

    assert created.plain_key == "sk-sluice-local-development-key-0000000000"
    assert scan(backend.dynamodb)[0]["key_hash"]["S"] == keys.hash_key("sk-sluice-local-development-key-0000000000")


@pytest.mark.parametrize(("tenant", "plan"), [("", "plan"), ("   ", "plan"), ("acme", ""), ("acme", " ")])
def test_create_refuses_an_empty_tenant_or_plan_before_touching_aws(backend, tenant, plan):
    with pytest.raises(ValueError, match="must not be empty"):
        create(backend, tenant=tenant, usage_plan_id=plan)

    assert backend.apigateway.get_api_keys()["items"] == []
    assert scan(backend.dynamodb) == []


def test_create_that_fails_to_store_leaves_no_orphan_gateway_key(backend):
    create(backend, plain_key="sk-sluice-local-development-key-0000000000")

    with pytest.raises(ClientError) as raised:
        create(backend, plain_key="sk-sluice-local-development-key-0000000000")

    assert raised.value.response["Error"]["Code"] == "ConditionalCheckFailedException"
    assert len(backend.apigateway.get_api_keys()["items"]) == 1
    assert len(scan(backend.dynamodb)) == 1


def test_list_filters_by_tenant(backend):
    acme_first = create(backend, tenant="acme", name="first")
    globex = create(backend, tenant="globex")
    acme_second = create(backend, tenant="acme", name="second")

    acme = keys.list_keys(dynamodb=backend.dynamodb, table=TABLE, tenant="acme")
    assert {record.key_id for record in acme} == {acme_first.record.key_id, acme_second.record.key_id}
    assert {record.tenant for record in acme} == {"acme"}
    everyone = keys.list_keys(dynamodb=backend.dynamodb, table=TABLE)
    assert len(everyone) == 3
    assert [record.tenant for record in everyone] == ["acme", "acme", "globex"]
    assert keys.list_keys(dynamodb=backend.dynamodb, table=TABLE, tenant="initech") == []
    assert globex.record in everyone


def test_list_never_exposes_hashes_or_keys(backend):
    created = [create(backend, tenant=tenant) for tenant in ("acme", "globex")]
    secrets = [c.plain_key for c in created] + [item["key_hash"]["S"] for item in scan(backend.dynamodb)]
    secrets += [item["usage_key_value"]["S"] for item in scan(backend.dynamodb)]

    listed = json.dumps([asdict(record) for record in keys.list_keys(dynamodb=backend.dynamodb, table=TABLE)])

    assert all(secret not in listed for secret in secrets)
    assert set(asdict(created[0].record)) == {
        "key_id",
        "tenant",
        "name",
        "status",
        "created_at",
        "usage_plan_id",
        "key_hint",
        "revoked_at",
        "role",
    }


def test_revoke_flips_status_and_disables_the_gateway_key(backend):
    revoked_key = create(backend, tenant="acme")
    kept_key = create(backend, tenant="acme")

    record = keys.revoke_key(
        dynamodb=backend.dynamodb, apigateway=backend.apigateway, table=TABLE, key_id=revoked_key.record.key_id
    )

    assert record.status == "revoked"
    assert record.revoked_at
    items = {item["key_id"]["S"]: item for item in scan(backend.dynamodb)}
    assert items[revoked_key.record.key_id]["status"]["S"] == "revoked"
    assert items[kept_key.record.key_id]["status"]["S"] == "active"
    gateway = backend.apigateway
    assert gateway.get_api_key(apiKey=items[revoked_key.record.key_id]["usage_key_id"]["S"])["enabled"] is False
    assert gateway.get_api_key(apiKey=items[kept_key.record.key_id]["usage_key_id"]["S"])["enabled"] is True


def test_revoking_twice_keeps_the_first_revocation_time(backend):
    created = create(backend)
    keys.revoke_key(dynamodb=backend.dynamodb, apigateway=backend.apigateway, table=TABLE, key_id=created.record.key_id)
    backend.dynamodb.update_item(
        TableName=TABLE,
        Key={"key_hash": {"S": keys.hash_key(created.plain_key)}},
        UpdateExpression="SET revoked_at = :t",
        ExpressionAttributeValues={":t": {"S": "2026-01-01T00:00:00+00:00"}},
    )

    again = keys.revoke_key(
        dynamodb=backend.dynamodb, apigateway=backend.apigateway, table=TABLE, key_id=created.record.key_id
    )

    assert again.status == "revoked"
    assert again.revoked_at == "2026-01-01T00:00:00+00:00"


def test_revoking_an_unknown_id_raises_a_clear_error(backend):
    create(backend)

    with pytest.raises(keys.KeyNotFound) as raised:
        keys.revoke_key(dynamodb=backend.dynamodb, apigateway=backend.apigateway, table=TABLE, key_id="key_nope")

    assert str(raised.value) == "no API key with id key_nope"
    assert isinstance(raised.value, KeyError)  # callers catching KeyError keep working
    assert {item["status"]["S"] for item in scan(backend.dynamodb)} == {"active"}


# --- tools/keys.py -----------------------------------------------------------------------------------------


def printed_key(output: str) -> str:
    found = [word for word in output.split() if word.startswith("sk-sluice-")]
    assert len(found) == 1, output
    return found[0]


def test_cli_create_list_revoke_with_table_and_plan_flags(backend, capsys):
    flags = ["--region", "us-east-1", "--table", TABLE]

    assert tool.main([*flags, "create", "--tenant", "acme", "--name", "ci", "--usage-plan-id", backend.plan_id]) == 0
    out = capsys.readouterr().out
    plain_key = printed_key(out)
    assert "cannot be shown again" in out
    item = scan(backend.dynamodb)[0]
    assert item["key_hash"]["S"] == keys.hash_key(plain_key)
    key_id = item["key_id"]["S"]
    assert f"key id:      {key_id}" in out
    assert "tenant:      acme" in out
    assert f"usage plan:  {backend.plan_id}" in out

    assert tool.main([*flags, "list"]) == 0
    listing = capsys.readouterr().out
    header, row = listing.splitlines()
    assert header.split() == ["KEY_ID", "TENANT", "ROLE", "NAME", "STATUS", "CREATED_AT", "KEY_HINT"]
    assert row.split() == [key_id, "acme", "consumer", "ci", "active", item["created_at"]["S"], item["key_hint"]["S"]]
    assert plain_key not in listing
    assert item["key_hash"]["S"] not in listing
    assert item["usage_key_value"]["S"] not in listing

    assert tool.main([*flags, "revoke", "--key-id", key_id]) == 0
    assert f"revoked {key_id} (tenant acme)" in capsys.readouterr().out
    assert tool.main([*flags, "list", "--tenant", "acme"]) == 0
    assert " revoked " in capsys.readouterr().out
    assert backend.apigateway.get_api_key(apiKey=item["usage_key_id"]["S"])["enabled"] is False


def test_cli_list_filters_by_tenant_and_says_when_empty(backend, capsys):
    create(backend, tenant="acme")
    create(backend, tenant="globex")

    assert tool.main(["--table", TABLE, "list", "--tenant", "globex"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert [row.split()[1] for row in rows] == ["globex"]
    assert tool.main(["--table", TABLE, "list", "--tenant", "initech"]) == 0
    assert capsys.readouterr().out.strip() == "no keys for tenant initech"


STACK_TEMPLATE = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Parameters": {"DefaultUsagePlan": {"Type": "String"}},
    "Resources": {
        "ApiKeysTable": {
            "Type": "AWS::DynamoDB::Table",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "AttributeDefinitions": [
                    {"AttributeName": "key_hash", "AttributeType": "S"},
                    {"AttributeName": "key_id", "AttributeType": "S"},
                ],
                "KeySchema": [{"AttributeName": "key_hash", "KeyType": "HASH"}],
                "GlobalSecondaryIndexes": [
                    {
                        "IndexName": keys.KEY_ID_INDEX,
                        "KeySchema": [{"AttributeName": "key_id", "KeyType": "HASH"}],
                        "Projection": {"ProjectionType": "ALL"},
                    }
                ],
            },
        }
    },
    "Outputs": {
        "ApiKeysTableName": {"Value": {"Ref": "ApiKeysTable"}},
        "DefaultUsagePlanId": {"Value": {"Ref": "DefaultUsagePlan"}},
    },
}


@pytest.fixture
def stack(aws) -> SimpleNamespace:
    """A real (moto) CloudFormation stack with the outputs the tool reads; its table is made by the stack."""
    apigateway = boto3.client("apigateway")
    plan_id = create_usage_plan(apigateway)
    cloudformation = boto3.client("cloudformation")
    cloudformation.create_stack(
        StackName="sluice-test",
        TemplateBody=json.dumps(STACK_TEMPLATE),
        Parameters=[{"ParameterKey": "DefaultUsagePlan", "ParameterValue": plan_id}],
    )
    outputs = {o["OutputKey"]: o["OutputValue"] for o in cloudformation.describe_stacks()["Stacks"][0]["Outputs"]}
    return SimpleNamespace(
        name="sluice-test",
        table=outputs["ApiKeysTableName"],
        plan_id=plan_id,
        dynamodb=boto3.client("dynamodb"),
        apigateway=apigateway,
    )


def test_cli_resolves_table_and_plan_from_stack_outputs(stack, capsys):
    assert stack.table != TABLE  # the stack named its own table: nothing below can hit conftest's by accident

    assert tool.main(["--stack", stack.name, "--region", "us-east-1", "create", "--tenant", "acme"]) == 0
    plain_key = printed_key(capsys.readouterr().out)

    (item,) = scan(stack.dynamodb, stack.table)
    assert item["key_hash"]["S"] == keys.hash_key(plain_key)
    assert item["usage_plan_id"]["S"] == stack.plan_id
    plan_keys = stack.apigateway.get_usage_plan_keys(usagePlanId=stack.plan_id)["items"]
    assert [plan_key["id"] for plan_key in plan_keys] == [item["usage_key_id"]["S"]]

    assert tool.main(["--stack", stack.name, "list"]) == 0
    assert item["key_id"]["S"] in capsys.readouterr().out
    assert tool.main(["--stack", stack.name, "revoke", "--key-id", item["key_id"]["S"]]) == 0
    assert scan(stack.dynamodb, stack.table)[0]["status"]["S"] == "revoked"


def test_cli_usage_plan_flag_overrides_the_stack_output(stack, capsys):
    premium = create_usage_plan(stack.apigateway, name="premium")

    assert tool.main(["--stack", stack.name, "create", "--tenant", "acme", "--usage-plan-id", premium]) == 0

    assert f"usage plan:  {premium}" in capsys.readouterr().out
    assert scan(stack.dynamodb, stack.table)[0]["usage_plan_id"]["S"] == premium
    assert stack.apigateway.get_usage_plan_keys(usagePlanId=stack.plan_id)["items"] == []


def test_cli_table_flag_overrides_the_stack_output(stack, capsys):
    create_keys_table(stack.dynamodb, "other-keys")

    assert tool.main(["--stack", stack.name, "--table", "other-keys", "create", "--tenant", "acme"]) == 0

    assert len(scan(stack.dynamodb, "other-keys")) == 1
    assert scan(stack.dynamodb, stack.table) == []


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["list"], "error: give --stack, or --table directly"),
        (["--table", TABLE, "create", "--tenant", "acme"], "error: give --stack, or --usage-plan-id directly"),
        (["--stack", "no-such-stack", "list"], "error: cannot read stack no-such-stack: "),
        (["--table", TABLE, "revoke", "--key-id", "key_nope"], "error: no API key with id key_nope"),
        (["--table", TABLE, "create", "--tenant", " ", "--usage-plan-id", "p"], "error: tenant must not be empty"),
        (["--table", "missing-table", "list"], "error: ResourceNotFoundException: "),
    ],
)
def test_cli_reports_operator_errors_in_one_line(backend, capsys, argv, message):
    assert tool.main(argv) == 1

    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith(message)
    assert len(captured.err.strip().splitlines()) == 1


def test_cli_reports_a_stack_without_the_outputs(aws, capsys):
    template = {"Resources": {"Topic": {"Type": "AWS::SNS::Topic"}}}
    boto3.client("cloudformation").create_stack(StackName="bare", TemplateBody=json.dumps(template))

    assert tool.main(["--stack", "bare", "list"]) == 1
    assert capsys.readouterr().err.strip() == "error: stack bare has no output ApiKeysTableName; pass --table"
    assert tool.main(["--stack", "bare", "--table", TABLE, "create", "--tenant", "acme"]) == 1
    assert "has no output DefaultUsagePlanId; pass --usage-plan-id" in capsys.readouterr().err


def test_cli_requires_a_command_and_a_tenant(capsys):
    with pytest.raises(SystemExit) as raised:
        tool.main(["--table", TABLE])
    assert raised.value.code == 2
    with pytest.raises(SystemExit):
        tool.main(["--table", TABLE, "create"])
    assert "--tenant" in capsys.readouterr().err


def test_cli_script_with_endpoint_url_against_a_moto_server(tmp_path):
    """`python tools/keys.py --endpoint-url ...` as local mode will run it: a separate process, a real HTTP endpoint."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        dynamodb = boto3.client("dynamodb", endpoint_url=endpoint)
        apigateway = boto3.client("apigateway", endpoint_url=endpoint)
        cloudformation = boto3.client("cloudformation", endpoint_url=endpoint)
        plan_id = create_usage_plan(apigateway, name="local")
        cloudformation.create_stack(
            StackName="sluice-local",
            TemplateBody=json.dumps(STACK_TEMPLATE),
            Parameters=[{"ParameterKey": "DefaultUsagePlan", "ParameterValue": plan_id}],
        )
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(tmp_path),
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": str(tmp_path / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
        }

        def run(*argv: str) -> subprocess.CompletedProcess:
            command = [sys.executable, str(ROOT / "tools" / "keys.py"), "--endpoint-url", endpoint, *argv]
            return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

        created = run("--stack", "sluice-local", "--region", "us-east-1", "create", "--tenant", "acme")
        assert created.returncode == 0, created.stderr
        plain_key = printed_key(created.stdout)
        table = cloudformation.describe_stacks(StackName="sluice-local")["Stacks"][0]["Outputs"]
        table = next(o["OutputValue"] for o in table if o["OutputKey"] == "ApiKeysTableName")
        (item,) = dynamodb.scan(TableName=table)["Items"]
        assert item["key_hash"]["S"] == keys.hash_key(plain_key)
        assert apigateway.get_usage_plan_keys(usagePlanId=plan_id)["items"][0]["id"] == item["usage_key_id"]["S"]

        listed = run("--stack", "sluice-local", "--region", "us-east-1", "list")
        assert listed.returncode == 0, listed.stderr
        assert item["key_id"]["S"] in listed.stdout
    finally:
        server.stop()


# --- roles and tenant names -------------------------------------------------------------------------


@pytest.mark.parametrize("tenant", ["Acme", "acme/../globex", "arn:aws:iam::123456789012:role/x", "a" * 64, "-x"])
def test_create_refuses_an_invalid_tenant_name_before_touching_aws(backend, tenant):
    with pytest.raises(ValueError, match="tenant"):
        create(backend, tenant=tenant)

    assert scan(backend.dynamodb) == []
    assert backend.apigateway.get_api_keys()["items"] == []


def test_create_refuses_an_unknown_role(backend):
    with pytest.raises(ValueError, match="role must be one of consumer, operator"):
        create(backend, role="admin")

    assert scan(backend.dynamodb) == []


def test_cli_create_refuses_an_invalid_tenant_in_one_line(backend, capsys):
    argv = ["--table", TABLE, "create", "--tenant", "Team Risk", "--usage-plan-id", backend.plan_id]

    assert tool.main(argv) == 1

    err = capsys.readouterr().err
    assert err.startswith("error: tenant 'Team Risk' is not a valid tenant name: use lower-case letters")
    assert "^[a-z0-9][a-z0-9_-]{0,62}$" in err
    assert scan(backend.dynamodb) == []


def test_cli_creates_an_operator_key_and_list_shows_each_keys_role(backend, capsys):
    flags = ["--table", TABLE]
    assert (
        tool.main([*flags, "create", "--tenant", "platform", "--role", "operator", "--usage-plan-id", backend.plan_id])
        == 0
    )
    assert "role:        operator" in capsys.readouterr().out
    assert tool.main([*flags, "create", "--tenant", "acme", "--usage-plan-id", backend.plan_id]) == 0
    assert "role:        consumer" in capsys.readouterr().out

    assert tool.main([*flags, "list"]) == 0

    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["KEY_ID", "TENANT", "ROLE"]
    assert sorted(tuple(row.split()[1:3]) for row in rows) == [("acme", "consumer"), ("platform", "operator")]
    items = {item["tenant"]["S"]: item for item in scan(backend.dynamodb)}
    assert items["platform"]["role"]["S"] == "operator"


def test_cli_refuses_a_role_it_does_not_know(backend, capsys):
    with pytest.raises(SystemExit):
        tool.main(["--table", TABLE, "create", "--tenant", "acme", "--role", "admin", "--usage-plan-id", "p"])

    assert "invalid choice: 'admin'" in capsys.readouterr().err

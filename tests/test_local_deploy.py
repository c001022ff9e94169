"""Local mode's embedded AWS: template.yaml deployed into moto, its functions run in-process.

One moto server (free port) and one deployment of the real template per module; the Step Functions
tests deploy a tiny SAM template (tests/fixtures/local_sfn) next to it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import boto3
import pytest
from samtranslator.yaml_helper import yaml_parse

from sluice_local.cfn_adapt import adapt
from sluice_local.config import LOOPBACK
from sluice_local.deploy import DeployError, deploy_template
from sluice_local.emulator import start_moto
from sluice_local.lambdas import LambdaRunner, function_environment, install_moto_lambda_router
from tests.conftest import FIXTURES, ROOT, load_event

REGION = "us-east-1"
STACK = "sluice-test"
SFN_TEMPLATE = FIXTURES / "local_sfn" / "template.yaml"


@pytest.fixture(scope="module")
def moto_server():
    server = start_moto(LOOPBACK, 0)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(moto_server):
    def make(service: str):
        return boto3.client(
            service,
            endpoint_url=moto_server.url,
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",
            aws_session_token="local",
        )

    return make


@pytest.fixture(scope="module")
def deployment(moto_server):
    return deploy_template(
        ROOT / "template.yaml",
        aws_url=moto_server.url,
        stack_name=STACK,
        region=REGION,
        parameters={"LogLevel": "DEBUG"},
    )


@pytest.fixture(scope="module")
def runner(moto_server, deployment):
    """The template's functions with the environment the orchestrator applies, moto routed to them."""
    patcher = pytest.MonkeyPatch()
    for name, value in function_environment(deployment, moto_server.url, REGION).items():
        patcher.setenv(name, value)
    runner = LambdaRunner(deployment.functions, ROOT)
    uninstall = install_moto_lambda_router(runner)
    yield runner
    uninstall()
    patcher.undo()


# ---------------------------------------------------------------------- the embedded AWS
def test_moto_starts_again_on_the_same_port_after_a_killed_process():
    with socket.socket() as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    script = (
        "import sys, urllib.request\n"
        "from sluice_local.emulator import start_moto\n"
        f"server = start_moto({LOOPBACK!r}, {port})\n"
        "urllib.request.urlopen(server.url + '/moto-api/data.json').read()\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n"
    )
    # It dies with a served connection and without closing anything, as a killed `make local` would.
    first = subprocess.Popen(
        [sys.executable, "-c", script],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT / "local")},
        text=True,
    )
    try:
        assert first.stdout.readline().strip() == "ready"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The next process (this one) gets the port at once.
    again = start_moto(LOOPBACK, port)
    try:
        assert again.port == port
        with urllib.request.urlopen(f"{again.url}/moto-api/data.json") as response:
            assert response.status == 200
    finally:
        again.stop()


def test_moto_reports_the_port_it_bound_and_runs_state_machines(moto_server):
    from moto.core.config import default_user_config

    assert moto_server.port != 0
    assert moto_server.url == f"http://{LOOPBACK}:{moto_server.port}"
    assert os.environ["MOTO_PORT"] == str(moto_server.port)
    assert default_user_config["stepfunctions"]["execute_state_machine"] is True


def test_moto_refuses_a_busy_port_at_once(moto_server):
    started = time.monotonic()
    with pytest.raises(OSError, match="cannot start the embedded AWS"):
        start_moto(LOOPBACK, moto_server.port)
    assert time.monotonic() - started < 1


# ---------------------------------------------------------------------- template.yaml in moto
def test_template_resources_exist_under_their_physical_names(deployment, client):
    table = deployment.resources["ApiKeysTable"]
    assert table.startswith(f"{STACK}-ApiKeysTable-")
    described = client("dynamodb").describe_table(TableName=table)["Table"]
    assert [index["IndexName"] for index in described["GlobalSecondaryIndexes"]] == ["KeyIdIndex"]

    parameter = deployment.resources["CatalogParameter"]
    assert parameter == f"/sluice/{STACK}/catalog"
    catalog = json.loads(client("ssm").get_parameter(Name=parameter)["Parameter"]["Value"])
    assert "titan-embed" in catalog["models"]

    assert {"ApiFunction", "AuthorizerFunction"} <= set(deployment.functions)
    for logical_id, physical in (("ApiFunction", f"{STACK}-api"), ("AuthorizerFunction", f"{STACK}-authorizer")):
        assert deployment.resources[logical_id] == physical
        assert client("lambda").get_function(FunctionName=physical)["Configuration"]["FunctionName"] == physical
    assert deployment.resource_types["AlarmTopic"] == "AWS::SNS::Topic"
    assert deployment.outputs["ApiKeysTableName"] == table
    assert deployment.outputs["CatalogParameterName"] == parameter


def test_skipped_resources_are_reported_with_reasons(deployment):
    skipped = {item.logical_id: item for item in deployment.skipped}
    assert all(item.reason for item in deployment.skipped)
    for api in ("PublicApi", "IamApi"):
        assert skipped[api].type == "AWS::ApiGateway::RestApi"
        assert "local API gateway" in skipped[api].reason
    assert skipped["DefaultUsagePlan"].type == "AWS::ApiGateway::UsagePlan"
    permissions = [item for item in deployment.skipped if item.type == "AWS::Lambda::Permission"]
    assert permissions
    assert all("not in the local stack" in item.reason for item in permissions)
    assert skipped["AlarmEmailSubscription"].type == "AWS::SNS::Subscription"
    # Local mode would create it through the SNS API, but AlarmEmail is empty by default.
    assert skipped["AlarmEmailSubscription"].reason.startswith("condition HasAlarmEmail is false")
    assert not deployment.pending
    assert {"ApiErrorRateAlarm", "CatalogRejectedAlarm"} <= set(skipped)
    # Outputs that name a skipped resource are left out too; nothing skipped is in the stack.
    assert skipped["ApiUrl"].type == "Output"
    assert "ApiUrl" not in deployment.outputs
    assert not set(skipped) & set(deployment.resources)


def test_function_specs_carry_the_resolved_environment(deployment):
    authorizer = deployment.functions["AuthorizerFunction"]
    assert authorizer.environment["SLUICE_API_KEYS_TABLE"] == deployment.resources["ApiKeysTable"]
    assert (authorizer.handler, authorizer.timeout, authorizer.memory) == ("app.lambda_handler", 5, 512)
    assert authorizer.code_dir == Path("functions/authorizer")
    assert authorizer.layer_dirs == (Path("layers/sluice"),)

    api = deployment.functions["ApiFunction"]
    assert api.environment["SLUICE_CATALOG_PARAMETER"] == deployment.resources["CatalogParameter"]
    assert api.environment["POWERTOOLS_LOG_LEVEL"] == "DEBUG"  # the parameter override
    assert api.environment["SLUICE_CATALOG_TTL_SECONDS"] == "300"  # the template's default
    assert (api.code_dir, api.timeout, api.memory) == (Path("functions/api"), 30, 1024)


def test_function_environment_points_every_client_at_the_embedded_aws(deployment, moto_server):
    environment = function_environment(deployment, moto_server.url, REGION)
    assert environment["AWS_ENDPOINT_URL"] == moto_server.url
    assert environment["AWS_DEFAULT_REGION"] == REGION
    assert environment["AWS_ACCESS_KEY_ID"] == "local"
    assert environment["SLUICE_API_KEYS_TABLE"] == deployment.resources["ApiKeysTable"]
    assert environment["SLUICE_CATALOG_PARAMETER"] == deployment.resources["CatalogParameter"]


# ---------------------------------------------------------------------- functions in-process
def test_authorizer_without_a_header_returns_the_unauthorized_error(runner, deployment):
    event = load_event("authorizer/missing-header.json")
    for name in ("AuthorizerFunction", f"{STACK}-authorizer", deployment.functions["AuthorizerFunction"].arn):
        error = runner.invoke(name, event)
        assert error["errorType"] == "Unauthorized"
        assert error["errorMessage"] == "Unauthorized"
        assert error["stackTrace"]


def test_authorizer_allows_a_key_stored_in_the_local_table(runner, deployment, client):
    from sluice.auth.keys import create_key

    apigateway = client("apigateway")
    create_key(
        dynamodb=client("dynamodb"),
        apigateway=apigateway,
        table=deployment.resources["ApiKeysTable"],
        tenant="acme",
        usage_plan_id=apigateway.create_usage_plan(name="local")["id"],
        plain_key="sk-sluice-SAMPLEonlyNotARealKey-9f3kQ2vXb7LmN4pR8tYw1zC6",  # the key in the event
    )
    decision = runner.invoke("AuthorizerFunction", load_event("authorizer/valid-key.json"))
    assert decision["principalId"] == "acme"
    assert decision["context"]["tenant"] == "acme"


def test_moto_lambda_invoke_runs_the_handler_in_process(runner, client):
    response = client("lambda").invoke(
        FunctionName=f"{STACK}-authorizer", Payload=json.dumps(load_event("authorizer/missing-header.json"))
    )
    assert response["FunctionError"] == "Unhandled"
    payload = json.loads(response["Payload"].read())
    assert (payload["errorType"], payload["errorMessage"]) == ("Unauthorized", "Unauthorized")


# ---------------------------------------------------------------------- the template drives the stack
def test_a_resource_added_to_the_template_exists_locally_with_no_code_change(moto_server, client, tmp_path):
    template = yaml_parse((ROOT / "template.yaml").read_text())
    template["Resources"]["JobsQueue"] = {"Type": "AWS::SQS::Queue", "Properties": {"VisibilityTimeout": 120}}
    template["Resources"]["JobsTable"] = {
        "Type": "AWS::DynamoDB::Table",
        "Properties": {
            "BillingMode": "PAY_PER_REQUEST",
            "AttributeDefinitions": [{"AttributeName": "job_id", "AttributeType": "S"}],
            "KeySchema": [{"AttributeName": "job_id", "KeyType": "HASH"}],
            # The job announcer's event source mapping reads the table's stream.
            "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"},
        },
    }
    copied = tmp_path / "template.json"  # SAM reads JSON as well; code paths resolve against root
    copied.write_text(json.dumps(template))

    extended = deploy_template(copied, aws_url=moto_server.url, stack_name="sluice-extended", region=REGION, root=ROOT)

    queue_name = extended.resources["JobsQueue"].rsplit("/", 1)[1]  # the physical id is the queue URL
    assert queue_name.startswith("sluice-extended-JobsQueue-")
    assert client("sqs").get_queue_url(QueueName=queue_name)["QueueUrl"].endswith(queue_name)
    table = client("dynamodb").describe_table(TableName=extended.resources["JobsTable"])["Table"]
    assert table["KeySchema"] == [{"AttributeName": "job_id", "KeyType": "HASH"}]
    assert extended.resource_types["JobsQueue"] == "AWS::SQS::Queue"


def test_a_missing_code_folder_fails_clearly(moto_server, tmp_path):
    (tmp_path / "template.yaml").write_text(SFN_TEMPLATE.read_text())
    with pytest.raises(DeployError, match=r"code path '\.\./local_fn/' does not exist"):
        deploy_template(tmp_path / "template.yaml", aws_url=moto_server.url, stack_name="broken", region=REGION)


def test_a_stack_moto_refuses_fails_with_its_reason(flow, moto_server):
    with pytest.raises(DeployError, match=r"moto refused stack 'sluice-flow': .*already exists"):
        deploy_template(SFN_TEMPLATE, aws_url=moto_server.url, stack_name="sluice-flow", region=REGION)
    with pytest.raises(DeployError, match="declares no parameter Nope"):
        deploy_template(
            SFN_TEMPLATE, aws_url=moto_server.url, stack_name="other", region=REGION, parameters={"Nope": "1"}
        )


# ---------------------------------------------------------------------- what moto cannot create
def test_references_to_skipped_resources_are_replaced_and_recorded():
    adapted = adapt(
        {
            "Resources": {
                "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "api"}},
                "Fn": {
                    "Type": "AWS::Lambda::Function",
                    "DependsOn": ["Api", "Role"],
                    "Properties": {
                        "Environment": {"Variables": {"API": {"Ref": "Api"}, "URL": {"Fn::Sub": "https://${Api}/x"}}}
                    },
                },
                "Role": {
                    "Type": "AWS::IAM::Role",
                    "Properties": {
                        "Policies": [{"PolicyDocument": {"Statement": [{"Resource": {"Fn::GetAtt": "Api.Arn"}}]}}]
                    },
                },
                "Permission": {
                    "Type": "AWS::Lambda::Permission",
                    "Properties": {"FunctionName": {"Ref": "Fn"}, "SourceArn": {"Fn::Sub": "arn:${Api}/*"}},
                },
                "Alarm": {"Type": "AWS::CloudWatch::Alarm", "Properties": {}},
            },
            "Outputs": {"ApiId": {"Value": {"Ref": "Api"}}, "FnName": {"Value": {"Ref": "Fn"}}},
        }
    )
    resources = adapted.template["Resources"]
    assert set(resources) == {"Fn", "Role"}
    assert {(s.logical_id, s.type) for s in adapted.skipped} == {
        ("Api", "AWS::ApiGateway::RestApi"),
        ("Alarm", "AWS::CloudWatch::Alarm"),
        ("Permission", "AWS::Lambda::Permission"),
        ("ApiId", "Output"),
    }
    assert resources["Fn"]["DependsOn"] == ["Role"]
    assert resources["Fn"]["Properties"]["Environment"]["Variables"] == {
        "API": "local-skipped-Api",
        "URL": {"Fn::Sub": "https://local-skipped-Api/x"},
    }
    statement = resources["Role"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"][0]
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:apigateway:${AWS::Region}:${AWS::AccountId}:local-skipped/Api"
    }
    assert {a.logical_id for a in adapted.adjusted} == {"Fn", "Role"}
    assert set(adapted.template["Outputs"]) == {"FnName"}


def test_definition_substitutions_become_a_join_around_the_placeholders():
    adapted = adapt(
        {
            "Resources": {
                "Flow": {
                    "Type": "AWS::StepFunctions::StateMachine",
                    "Properties": {
                        "DefinitionString": {
                            "Fn::Join": [
                                "\n",
                                ['{"Resource": "${FnArn}", "Id.$": "$$.Execution.Id",', {"Ref": "Other"}, "}"],
                            ]
                        },
                        "DefinitionSubstitutions": {"FnArn": {"Fn::GetAtt": ["Fn", "Arn"]}},
                    },
                }
            }
        }
    )
    properties = adapted.template["Resources"]["Flow"]["Properties"]
    assert "DefinitionSubstitutions" not in properties
    # `$$` (the context object) is kept as it is: moto's Fn::Sub would turn it into `$`.
    assert properties["DefinitionString"] == {
        "Fn::Join": [
            "",
            [
                '{"Resource": "',
                {"Fn::GetAtt": ["Fn", "Arn"]},
                '", "Id.$": "$$.Execution.Id",\n',
                {"Ref": "Other"},
                "\n}",
            ],
        ]
    }


# ---------------------------------------------------------------------- Step Functions through the router
@pytest.fixture(scope="module")
def flow(moto_server, client):
    deployed = deploy_template(SFN_TEMPLATE, aws_url=moto_server.url, stack_name="sluice-flow", region=REGION)
    uninstall = install_moto_lambda_router(LambdaRunner(deployed.functions, deployed.root))
    yield deployed
    uninstall()


def run_execution(client, state_machine_arn: str, payload: dict) -> dict:
    stepfunctions = client("stepfunctions")
    # Unique names: moto names every unnamed execution "None".
    started = stepfunctions.start_execution(
        stateMachineArn=state_machine_arn, name=f"test-{uuid.uuid4()}", input=json.dumps(payload)
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        execution = stepfunctions.describe_execution(executionArn=started["executionArn"])
        if execution["status"] != "RUNNING":
            return execution
        time.sleep(0.05)
    raise AssertionError("execution still running after 30 s")


def test_state_machine_definition_has_its_substitutions_applied(flow, client):
    definition = client("stepfunctions").describe_state_machine(stateMachineArn=flow.outputs["FlowArn"])["definition"]
    assert "${" not in definition
    task = json.loads(definition)["States"]["CallFlaky"]
    assert task["Parameters"]["FunctionName"] == flow.functions["FlakyFunction"].arn
    assert task["Retry"][0]["IntervalSeconds"] == 1
    assert [a.logical_id for a in flow.adjusted] == ["Flow"]


def test_state_machine_retries_the_in_process_function_until_it_succeeds(flow, client):
    key = str(uuid.uuid4())
    execution = run_execution(client, flow.outputs["FlowArn"], {"key": key, "fail_times": 1})
    assert execution["status"] == "SUCCEEDED"
    assert json.loads(execution["output"])["result"] == {
        "key": key,
        "attempts": 2,
        "function": flow.functions["FlakyFunction"].physical_name,
    }


def test_state_machine_catches_the_function_error_by_its_type(flow, client):
    execution = run_execution(client, flow.outputs["FlowArn"], {"key": str(uuid.uuid4()), "fatal": True})
    assert execution["status"] == "SUCCEEDED"
    output = json.loads(execution["output"])
    assert output["outcome"] == "caught"
    assert output["error"]["Error"] == "FatalError"
    assert json.loads(output["error"]["Cause"])["errorMessage"].endswith("cannot succeed")


def test_the_data_bucket_is_versioned_locally_as_the_template_says(deployment, client):
    # moto's CloudFormation ignores VersioningConfiguration; the drop's job ids rely on S3 events'
    # versionId, so local mode applies it through the S3 API.
    from sluice_local.deploy import connect_event_sources

    bucket = deployment.resources["DataBucket"]
    connect_event_sources(deployment)

    assert client("s3").get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    applied = [item for item in deployment.created if item.logical_id == "DataBucket"]
    assert "AWS::S3::Bucket VersioningConfiguration" in [item.type for item in applied]


def test_the_templates_own_schedules_run_locally(deployment):
    # The reaper and the announcer's backlog run, as local mode's scheduler reads them (and fires them).
    from sluice_local.schedules import read_schedules, stack_values

    schedules, not_run = read_schedules(deployment.translated, stack_values(deployment, {"LogLevel": "DEBUG"}))

    assert not_run == []
    by_function = {schedule.function: schedule for schedule in schedules}
    assert set(by_function) == {"JobReaperFunction", "JobAnnouncerFunction"}
    assert {schedule.expression_text for schedule in schedules} == {"rate(5 minutes)"}
    assert json.loads(by_function["JobAnnouncerFunction"].input) == {"backlog": True}
    assert by_function["JobReaperFunction"].function_arn == deployment.functions["JobReaperFunction"].arn

"""template.yaml wires the jobs API and the batch drop as the code expects."""

from __future__ import annotations

import re

import pytest
from samtranslator.yaml_helper import yaml_parse

from tests.conftest import ROOT, load_handler


@pytest.fixture(scope="module")
def resources() -> dict:
    return yaml_parse((ROOT / "template.yaml").read_text())["Resources"]


def test_every_api_route_is_deployed_on_both_apis(resources):
    events = resources["ApiFunction"]["Properties"]["Events"].values()
    deployed = {
        (event["Properties"]["RestApiId"]["Ref"], event["Properties"]["Method"], event["Properties"]["Path"])
        for event in events
    }
    routes = {(method, re.sub(r"<(\w+)>", r"{\1}", path)) for method, path, *_ in load_handler("api").ROUTES}

    for method, path in routes:
        assert ("PublicApi", method, path) in deployed, (method, path)
        assert ("IamApi", method, path) in deployed, (method, path)


def test_the_api_starts_the_stacks_own_state_machines(resources):
    variables = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]

    assert variables["SLUICE_ASYNC_STATE_MACHINE_ARN"] == {"Ref": "AsyncInferenceStateMachine"}
    assert variables["SLUICE_BATCH_STATE_MACHINE_ARN"] == {"Ref": "BatchTransformStateMachine"}
    assert variables["SLUICE_JOBS_TABLE"] == {"Ref": "JobsTable"}
    assert variables["SLUICE_IDEMPOTENCY_TABLE"] == {"Ref": "IdempotencyTable"}
    assert variables["SLUICE_DATA_BUCKET"] == {"Ref": "DataBucket"}


def test_the_batch_drop_function_reads_the_drop_queue_reporting_item_failures(resources):
    function = resources["BatchDropFunction"]["Properties"]
    (source,) = function["Events"].values()

    assert source["Type"] == "SQS"
    assert source["Properties"]["Queue"] == {"Fn::GetAtt": ["BatchDropQueue", "Arn"]}
    assert source["Properties"]["BatchSize"] == 10
    assert source["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert function["Environment"]["Variables"]["SLUICE_BATCH_STATE_MACHINE_ARN"] == {
        "Ref": "BatchTransformStateMachine"
    }
    # Lambda's advice: the queue's visibility timeout is at least six times the function's timeout.
    assert resources["BatchDropQueue"]["Properties"]["VisibilityTimeout"] >= 6 * function["Timeout"]
    assert resources["BatchDropFunctionLogGroup"]["Properties"]["KmsKeyId"] == {"Fn::GetAtt": ["SluiceKey", "Arn"]}


def test_the_drop_function_may_pin_dropped_versions_and_nothing_more_of_the_bucket(resources):
    statements = {
        statement["Sid"]: statement
        for policy in resources["BatchDropFunction"]["Properties"]["Policies"]
        for statement in policy["Statement"]
    }
    s3 = {
        sid: (statement["Action"], statement["Resource"])
        for sid, statement in statements.items()
        if any(str(action).startswith("s3:") for action in _as_list(statement["Action"]))
    }

    # CopyObject of a VersionId needs GetObjectVersion on the source, PutObject on the target only.
    assert s3 == {
        "ReadTheDroppedVersion": (
            ["s3:GetObject", "s3:GetObjectVersion"],
            {"Fn::Sub": "${DataBucket.Arn}/batch-input/*"},
        ),
        "PinTheDroppedVersionForItsJob": ("s3:PutObject", {"Fn::Sub": "${DataBucket.Arn}/batch-pinned/*"}),
    }
    services = statements["UseTheEncryptedTableAndQueue"]["Condition"]["StringEquals"]["kms:ViaService"]
    assert {"Fn::Sub": "s3.${AWS::Region}.amazonaws.com"} in services


def _as_list(value):
    return value if isinstance(value, list) else [value]

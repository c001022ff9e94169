"""template.yaml wires the jobs API and the batch drop as the code expects."""

from __future__ import annotations

import re

from samtranslator.yaml_helper import yaml_parse

from tests.conftest import ROOT, load_handler


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


# --- approvals and the IAM backstop ------------------------------------------------------------------


def statements(resource: dict) -> list[dict]:
    found = []
    for policy in resource["Properties"].get("Policies", []):
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            # Conditional statements (Fn::If) are the extra buckets' and topics': not these.
            if "Action" in statement:
                found.append(statement)
    return found


def test_no_bug_can_create_a_transform_job_on_an_instance_type_nobody_listed(resources):
    parameters = yaml_parse((ROOT / "template.yaml").read_text())["Parameters"]
    # "Start transform job" (TransformStartFunction) creates them; the state machine only follows and stops them.
    machine = resources["BatchTransformStateMachine"]
    assert not [s for s in statements(machine) if "sagemaker:CreateTransformJob" in str(s["Action"])]
    creating = [
        s for s in statements(resources["TransformStartFunction"]) if "sagemaker:CreateTransformJob" in str(s["Action"])
    ]

    assert len(creating) == 1
    assert creating[0]["Action"] == "sagemaker:CreateTransformJob"
    assert creating[0]["Condition"] == {
        "ForAllValues:StringEquals": {"sagemaker:InstanceTypes": {"Ref": "TransformInstanceTypes"}}
    }
    listed = parameters["TransformInstanceTypes"]["Default"].split(",")
    assert set(parameters["BatchUnapprovedInstanceTypes"]["Default"].split(",")) <= set(listed)
    assert "ml.p3.2xlarge" in listed
    assert "ml.p4d.24xlarge" not in listed


def test_the_approval_wait_and_the_api_see_the_stacks_approvals_table(resources):
    table = resources["ApprovalsTable"]["Properties"]
    assert table["SSESpecification"]["KMSMasterKeyId"] == {"Ref": "SluiceKey"}
    (index,) = table["GlobalSecondaryIndexes"]
    assert index["IndexName"] == "ByStatus"
    # Listing pending approvals never reads a task token.
    assert index["Projection"]["ProjectionType"] == "INCLUDE"
    assert "task_token" not in index["Projection"]["NonKeyAttributes"]
    api = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert api["SLUICE_APPROVALS_TABLE"] == {"Ref": "ApprovalsTable"}
    assert api["SLUICE_OPERATOR_PRINCIPALS"] == {"Fn::Join": [",", {"Ref": "OperatorPrincipals"}]}
    request = resources["ApprovalRequestFunction"]["Properties"]["Environment"]["Variables"]
    assert request["SLUICE_APPROVALS_TABLE"] == {"Ref": "ApprovalsTable"}
    substitutions = resources["BatchTransformStateMachine"]["Properties"]["DefinitionSubstitutions"]
    assert substitutions["ApprovalRequestFunctionArn"] == {"Fn::GetAtt": ["ApprovalRequestFunction", "Arn"]}
    policy = resources["BatchPolicyFunction"]["Properties"]["Environment"]["Variables"]
    assert policy["SLUICE_APPROVAL_TIMEOUT_HOURS"] == {"Ref": "ApprovalTimeoutHours"}


def test_the_api_may_only_resume_waiting_workflows_and_decide_approvals(resources):
    api = statements(resources["ApiFunction"])
    resume = [s for s in api if "states:SendTaskSuccess" in str(s["Action"])]
    assert [s["Action"] for s in resume] == [["states:SendTaskSuccess", "states:SendTaskFailure"]]
    on_approvals = [s for s in api if "ApprovalsTable" in str(s["Resource"])]
    assert sorted(str(s["Action"]) for s in on_approvals) == sorted(
        ["['dynamodb:GetItem', 'dynamodb:UpdateItem']", "dynamodb:Query"]
    )


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


def test_the_batch_workflow_may_check_a_dropped_files_pinned_copy(resources):
    """Drops are scored from their pinned copy: 'Check input exists' lists that prefix, or every drop fails."""
    from sluice.storage.keys import BATCH_PINNED_PREFIX

    (listing,) = [
        s for s in statements(resources["BatchTransformStateMachine"]) if s.get("Sid") == "CheckTheInputPrefix"
    ]
    assert f"{BATCH_PINNED_PREFIX}/*" in listing["Condition"]["StringLike"]["s3:prefix"]


# --- bounded workflows -----------------------------------------------------------------------------


def test_every_state_machine_is_bounded_by_a_timeout_parameter(resources):
    import json
    import re

    for logical_id, parameter in (
        ("AsyncInferenceStateMachine", "AsyncWorkflowTimeoutSeconds"),
        ("BatchTransformStateMachine", "BatchWorkflowTimeoutSeconds"),
        ("TrainingStateMachine", "TrainingWorkflowTimeoutSeconds"),
        ("DeploymentStateMachine", "DeploymentWorkflowTimeoutSeconds"),
    ):
        properties = resources[logical_id]["Properties"]
        definition = (ROOT / properties["DefinitionUri"]).read_text()
        definition = re.sub(r"\$\{\w+\}", "7", definition.replace(f"${{{parameter}}}", "1"))
        assert json.loads(definition)["TimeoutSeconds"] == 1
        assert properties["DefinitionSubstitutions"][parameter] == {"Ref": parameter}


def test_the_transform_poll_loop_stays_far_below_the_history_limit_at_the_defaults():
    parameters = yaml_parse((ROOT / "template.yaml").read_text())["Parameters"]
    # About 14 history events per status check (Wait, Task, three Choice/Pass states); 25,000 per execution.
    worst = int(parameters["TransformMaxPolls"]["MaxValue"]) * int(parameters["TransformMaxAttempts"]["Default"]) * 14
    assert worst < 25_000
    polls = int(parameters["TransformMaxPolls"]["Default"]) * int(parameters["TransformPollMaxSeconds"]["Default"])
    attempts = int(parameters["TransformMaxAttempts"]["Default"])
    approval = float(parameters["ApprovalTimeoutHours"]["Default"]) * 3600
    assert int(parameters["BatchWorkflowTimeoutSeconds"]["Default"]) > approval + attempts * polls

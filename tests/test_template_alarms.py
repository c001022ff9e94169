"""template.yaml alarms to the alarm topic on every dead-letter queue, every state machine and every
function, and runs the reaper on a schedule with least privilege.

The checks find their subjects in the template (any queue something parks failures in, any state
machine, any function), so a resource added later is held to the same rule without editing this file.
"""

from __future__ import annotations

from typing import Any

import pytest

# Keys under which a resource names the queue its failures are parked in.
_PARKING_KEYS = {"deadLetterTargetArn", "DeadLetterQueue", "DeadLetterConfig", "OnFailure", "Destination", "TargetArn"}


def _of_type(resources: dict, kind: str) -> list[str]:
    return sorted(name for name, resource in resources.items() if resource["Type"] == kind)


def _parked_in(value: Any, queues: set[str], under_parking_key: bool = False) -> set[str]:
    """Queues named by `{"Fn::GetAtt": [queue, "Arn"]}` anywhere under a dead-letter or on-failure key."""
    found: set[str] = set()
    if isinstance(value, dict):
        target = value.get("Fn::GetAtt")
        if under_parking_key and isinstance(target, list) and target and target[0] in queues:
            found.add(target[0])
        for key, inner in value.items():
            found |= _parked_in(inner, queues, under_parking_key or key in _PARKING_KEYS)
    elif isinstance(value, list):
        for inner in value:
            found |= _parked_in(inner, queues, under_parking_key)
    return found


def dead_letter_queues(resources: dict) -> set[str]:
    queues = set(_of_type(resources, "AWS::SQS::Queue"))
    found: set[str] = set()
    for resource in resources.values():
        found |= _parked_in(resource.get("Properties", {}), queues)
    return found


def alarms(resources: dict) -> list[dict]:
    return [resources[name]["Properties"] for name in _of_type(resources, "AWS::CloudWatch::Alarm")]


def alarmed(resources: dict, namespace: str, metric: str, dimension: str) -> list[Any]:
    """The dimension values of the alarms on `metric` that notify the alarm topic when it goes above 0."""
    values = []
    for alarm in alarms(resources):
        if alarm.get("Namespace") != namespace or alarm.get("MetricName") != metric:
            continue
        assert {"Ref": "AlarmTopic"} in alarm["AlarmActions"], alarm
        assert alarm["ComparisonOperator"] == "GreaterThanThreshold"
        assert alarm["Threshold"] == 0
        values += [d["Value"] for d in alarm["Dimensions"] if d["Name"] == dimension]
    return values


def test_the_template_has_the_dead_letter_queues_this_test_knows_of(resources):
    """The finder itself: the two queues that park failures today are found (and the drop queue is not one)."""
    found = dead_letter_queues(resources)

    assert {"BatchDropDeadLetterQueue", "AsyncNotificationsDeadLetterQueue"} <= found
    assert "BatchDropQueue" not in found


def test_any_message_in_any_dead_letter_queue_raises_an_alarm(resources):
    watched = alarmed(resources, "AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName")

    for queue in dead_letter_queues(resources):
        assert {"Fn::GetAtt": [queue, "QueueName"]} in watched, f"{queue} has no messages-visible alarm"


@pytest.mark.parametrize("metric", ["ExecutionsFailed", "ExecutionsTimedOut"])
def test_every_state_machine_alarms_on_failed_and_timed_out_executions(resources, metric):
    machines = _of_type(resources, "AWS::Serverless::StateMachine") + _of_type(
        resources, "AWS::StepFunctions::StateMachine"
    )
    watched = alarmed(resources, "AWS/States", metric, "StateMachineArn")

    assert machines
    for machine in machines:
        assert {"Ref": machine} in watched, f"{machine} has no {metric} alarm"


def test_every_function_alarms_when_throttled(resources):
    functions = _of_type(resources, "AWS::Serverless::Function") + _of_type(resources, "AWS::Lambda::Function")
    watched = alarmed(resources, "AWS/Lambda", "Throttles", "FunctionName")

    for function in functions:
        assert {"Ref": function} in watched, f"{function} has no Throttles alarm"


def test_the_reaper_alarms_on_its_errors(resources):
    assert {"Ref": "JobReaperFunction"} in alarmed(resources, "AWS/Lambda", "Errors", "FunctionName")


# --- the reaper's wiring -------------------------------------------------------------------------------


def test_the_reaper_runs_on_the_interval_parameter_and_reads_its_limits_from_parameters(template, resources):
    function = resources["JobReaperFunction"]["Properties"]
    (schedule,) = function["Events"].values()

    assert schedule["Type"] == "ScheduleV2"
    assert schedule["Properties"]["ScheduleExpression"] == {"Fn::Sub": "rate(${ReaperIntervalMinutes} minutes)"}
    assert template["Parameters"]["ReaperIntervalMinutes"]["Default"] == 5
    variables = function["Environment"]["Variables"]
    for parameter in (
        "ReaperQueuedLimitMinutes",
        "ReaperApprovalMarginMinutes",
        "ReaperAsyncRunningLimitMinutes",
        "ReaperAsyncEndpointLimitMinutes",
        "ReaperBatchRunningLimitMinutes",
        "ReaperMaxJobsPerRun",
        "ApprovalTimeoutHours",
    ):
        assert parameter in template["Parameters"]
        assert {"Ref": parameter} in variables.values(), parameter
    assert variables["SLUICE_JOBS_TABLE"] == {"Ref": "JobsTable"}


def test_the_jobs_table_index_the_reaper_queries_is_by_status_and_last_change(resources):
    from sluice.jobs.reaper import BY_STATUS_INDEX

    indexes = {index["IndexName"]: index for index in resources["JobsTable"]["Properties"]["GlobalSecondaryIndexes"]}
    index = indexes[BY_STATUS_INDEX]

    assert [(key["AttributeName"], key["KeyType"]) for key in index["KeySchema"]] == [
        ("status", "HASH"),
        ("updated_at", "RANGE"),
    ]
    # The reaper filters by kind on the index and reads each job itself.
    assert index["Projection"] == {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["kind"]}


def test_the_reaper_may_query_the_index_but_never_scan_the_table(resources):
    statements = [s for policy in resources["JobReaperFunction"]["Properties"]["Policies"] for s in policy["Statement"]]
    actions = {
        action: statement["Resource"]
        for statement in statements
        for action in (statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]])
    }

    assert actions["dynamodb:Query"] == {"Fn::Sub": "${JobsTable.Arn}/index/ByStatus"}
    assert "dynamodb:Scan" not in actions
    assert actions["dynamodb:UpdateItem"] == {"Fn::GetAtt": ["JobsTable", "Arn"]}
    # Only the two job workflows' executions, only transform jobs named after a job.
    executions = "arn:${AWS::Partition}:states:${AWS::Region}:${AWS::AccountId}:execution:${AWS::StackName}-"
    assert actions["states:DescribeExecution"] == [
        {"Fn::Sub": f"{executions}{name}:*"}
        for name in ("async-inference", "batch-transform", "training", "deployment")
    ]
    assert str(actions["sagemaker:StopTransformJob"]).endswith(":transform-job/job-*'}")
    assert actions["s3:GetObject"] == {"Fn::Sub": "${DataBucket.Arn}/async-endpoint-output/*"}
    (listing,) = [s for s in statements if s["Action"] == "s3:ListBucket"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["async-endpoint-output/*"]}}
    assert "*" not in list(actions.values())

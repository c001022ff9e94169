"""template.yaml's limits against abuse and cost, and the IAM and key-policy scoping around them.

Checked on the SAM template and, where SAM generates the resource (stages, event source mappings), on
its translation to CloudFormation: what is deployed is the translation.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
from typing import Any

import pytest
from samtranslator.translator.transform import transform

from sluice.jobs.kinds.async_inference.upload_tickets import BY_EXPIRY_INDEX
from sluice.jobs.store import ANNOUNCE_PENDING, PENDING_ANNOUNCEMENTS_INDEX
from sluice_local.cfn_adapt import drop_reason

NO_VALUE = {"Ref": "AWS::NoValue"}
ACCOUNT, REGION, PARTITION, STACK = "123456789012", "us-east-1", "aws", "sluice-prod"


@pytest.fixture(scope="module")
def translated(template, monkeypatch_module) -> dict:
    """The CloudFormation SAM deploys (code locations stand in for `sam package`'s uploads)."""
    monkeypatch_module.setenv("AWS_DEFAULT_REGION", REGION)
    sam = copy.deepcopy(template)
    for resource in sam["Resources"].values():
        properties = resource.get("Properties", {})
        for name in ("CodeUri", "ContentUri", "DefinitionUri"):
            if isinstance(properties.get(name), str):
                properties[name] = f"s3://artifacts/{name}"
    return transform(sam, {}, lambda: {})["Resources"]


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def resolve(node: Any, parameters: dict[str, Any]) -> Any:
    """Enough of CloudFormation's intrinsics (Ref, Sub, Join, Split) to evaluate a policy resource."""
    pseudo = {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::StackName": STACK}
    values = {**pseudo, **parameters}
    if isinstance(node, list):
        return [resolve(item, parameters) for item in node]
    if not isinstance(node, dict):
        return node
    if "Ref" in node:
        return values[node["Ref"]]
    if "Fn::Join" in node:
        separator, items = node["Fn::Join"]
        items = resolve(items, parameters)
        return separator.join(items if isinstance(items, list) else [items])
    if "Fn::Split" in node:
        separator, text = node["Fn::Split"]
        return resolve(text, parameters).split(separator)
    if "Fn::Sub" in node:
        text, variables = (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
        local = {name: resolve(value, parameters) for name, value in variables.items()}
        return re.sub(r"\$\{([A-Za-z0-9_:.]+)\}", lambda m: str(local.get(m[1], values.get(m[1], m[0]))), text)
    raise AssertionError(f"cannot resolve {node}")


def statements(resource: dict) -> list[dict]:
    """Every policy statement of a SAM function or state machine, conditional ones included."""
    found = []
    for policy in resource["Properties"].get("Policies", []):
        for statement in policy.get("Statement", []) if isinstance(policy, dict) else []:
            if "Fn::If" in statement:
                found += [branch for branch in statement["Fn::If"][1:] if branch != NO_VALUE]
            else:
                found.append(statement)
    return found


def all_role_statements(resources: dict) -> list[tuple[str, dict]]:
    kinds = ("AWS::Serverless::Function", "AWS::Serverless::StateMachine")
    return [(name, s) for name, r in resources.items() if r["Type"] in kinds for s in statements(r)]


def actions(statement: dict) -> list[str]:
    action = statement["Action"]
    return action if isinstance(action, list) else [action]


def default(template: dict, parameter: str) -> Any:
    return template["Parameters"][parameter]["Default"]


# --- throttling and concurrency -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "rate", "burst"),
    [
        ("PublicApi", "ApiThrottleRateLimit", "ApiThrottleBurstLimit"),
        # No usage plan applies to SigV4 callers: without a stage limit the IAM API would have none.
        ("IamApi", "IamApiThrottleRateLimit", "IamApiThrottleBurstLimit"),
    ],
)
def test_an_api_stage_cannot_be_flooded_past_its_throttle(translated, template, api, rate, burst):
    stage = translated[f"{api}Stage"]["Properties"]
    (everything,) = [s for s in stage["MethodSettings"] if (s["ResourcePath"], s["HttpMethod"]) == ("/*", "*")]

    assert everything["ThrottlingRateLimit"] == {"Ref": rate}
    assert everything["ThrottlingBurstLimit"] == {"Ref": burst}
    assert 0 < default(template, rate) <= default(template, burst)


@pytest.mark.parametrize(
    ("function", "parameter"),
    [("ApiFunction", "ApiReservedConcurrency"), ("AuthorizerFunction", "AuthorizerReservedConcurrency")],
)
def test_a_request_flood_cannot_take_every_lambda_in_the_account(resources, template, function, parameter):
    reserved = resources[function]["Properties"]["ReservedConcurrentExecutions"]
    condition, on, off = reserved["Fn::If"]

    assert on == {"Ref": parameter}
    assert off == NO_VALUE
    # On by default; 0 turns the reservation off (0 reserved would stop the function altogether).
    assert default(template, parameter) > 0
    assert template["Conditions"][condition] == {"Fn::Not": [{"Fn::Equals": [{"Ref": parameter}, 0]}]}


def test_a_burst_of_dropped_files_starts_jobs_at_a_bounded_concurrency(translated, template):
    (mapping,) = [
        r
        for r in translated.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
        and r["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["BatchDropQueue", "Arn"]}
    ]

    assert mapping["Properties"]["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "DropQueueMaxConcurrency"}}
    declared = template["Parameters"]["DropQueueMaxConcurrency"]
    assert declared["MinValue"] >= 2  # SQS event sources refuse less
    assert declared["MinValue"] <= declared["Default"] <= declared["MaxValue"] <= 1000


# --- access logs and WAF --------------------------------------------------------------------------


@pytest.mark.parametrize("api", ["PublicApi", "IamApi"])
def test_every_api_request_leaves_a_json_access_log_in_an_encrypted_group(translated, resources, api):
    setting = translated[f"{api}Stage"]["Properties"]["AccessLogSetting"]
    group_id = setting["DestinationArn"]["Fn::GetAtt"][0]
    group = resources[group_id]["Properties"]
    line = json.loads(setting["Format"])  # a JSON line, as CloudWatch Logs Insights reads it

    assert {"requestId", "ip", "caller", "userArn", "httpMethod", "resourcePath", "status"} <= set(line)
    assert line["ip"] == "$context.identity.sourceIp"
    assert not any("body" in value or "querystring" in value for value in line.values())
    assert group["KmsKeyId"] == {"Fn::GetAtt": ["SluiceKey", "Arn"]}
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    # The key lets CloudWatch Logs encrypt this group (and only this stack's groups).
    name = resolve(group["LogGroupName"], {})
    arn = f"arn:{PARTITION}:logs:{REGION}:{ACCOUNT}:log-group:{name}"
    (logs,) = [s for s in key_statements(resources) if s["Sid"] == "LogsEncryptThisStacksLogGroups"]
    patterns = resolve(logs["Condition"]["ArnLike"]["kms:EncryptionContext:aws:logs:arn"], {})
    assert any(fnmatch.fnmatchcase(arn, pattern) for pattern in patterns)


def test_access_log_stages_wait_for_the_account_logging_role(resources, template):
    # API Gateway refuses a stage with access logs until the account has a logging role.
    account = resources["ApiGatewayAccount"]
    assert account["Condition"] == "CreatesApiGatewayLoggingRole"
    assert account["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": ["ApiGatewayLoggingRole", "Arn"]}
    assert default(template, "CreateApiGatewayLoggingRole") == "true"
    for group in ("PublicApiAccessLogGroup", "IamApiAccessLogGroup"):
        (tag,) = resources[group]["Properties"]["Tags"]
        assert tag["Value"]["Fn::If"][:2] == ["CreatesApiGatewayLoggingRole", {"Ref": "ApiGatewayAccount"}]


def test_the_waf_rate_rule_is_off_by_default_and_guards_both_stages_when_on(resources, template):
    assert default(template, "WafRateLimitPer5Min") == 0
    assert template["Conditions"]["HasWaf"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "WafRateLimitPer5Min"}, 0]}]}
    acl = resources["ApiWebAcl"]
    (rule,) = acl["Properties"]["Rules"]

    assert acl["Condition"] == "HasWaf"
    assert acl["Properties"]["Scope"] == "REGIONAL"
    assert rule["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 429
    assert rule["Statement"]["RateBasedStatement"]["AggregateKeyType"] == "IP"
    assert rule["Statement"]["RateBasedStatement"]["Limit"] == {"Ref": "WafRateLimitPer5Min"}
    associated = {
        resolve(
            r["Properties"]["ResourceArn"],
            {"PublicApi": "pub", "IamApi": "iam", "PublicApi.Stage": "dev", "IamApi.Stage": "dev"},
        )
        for r in resources.values()
        if r["Type"] == "AWS::WAFv2::WebACLAssociation" and r["Condition"] == "HasWaf"
    }
    assert associated == {
        f"arn:aws:apigateway:{REGION}::/restapis/pub/stages/dev",
        f"arn:aws:apigateway:{REGION}::/restapis/iam/stages/dev",
    }


def test_local_mode_leaves_the_waf_out_by_type():
    assert drop_reason("AWS::WAFv2::WebACL")
    assert drop_reason("AWS::WAFv2::WebACLAssociation")


# --- retention, key policy, IAM scoping ------------------------------------------------------------


@pytest.mark.parametrize("queue", ["BatchDropQueue", "BatchDropDeadLetterQueue"])
def test_queued_drops_survive_a_replacement_or_stack_deletion(resources, queue):
    assert resources[queue]["DeletionPolicy"] == "Retain"
    assert resources[queue]["UpdateReplacePolicy"] == "Retain"


def key_statements(resources: dict) -> list[dict]:
    return resources["SluiceKey"]["Properties"]["KeyPolicy"]["Statement"]


def test_no_other_account_can_use_the_key_through_an_aws_service(resources):
    for statement in key_statements(resources):
        if "Service" not in statement["Principal"]:
            continue
        condition = statement.get("Condition", {})
        source_account = condition.get("StringEquals", {}).get("aws:SourceAccount")
        logs_arns = condition.get("ArnLike", {}).get("kms:EncryptionContext:aws:logs:arn")
        if source_account is not None:
            assert source_account == {"Ref": "AWS::AccountId"}, statement["Sid"]
        else:
            # CloudWatch Logs: the log group ARN in the encryption context names this account.
            assert logs_arns, statement["Sid"]
            assert all(arn.startswith("arn:aws:logs:us-east-1:123456789012:") for arn in resolve(logs_arns, {}))


def test_alarm_notifications_may_use_the_key_only_for_this_stacks_alarms(resources):
    (alarms,) = [s for s in key_statements(resources) if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}]

    assert alarms["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    pattern = resolve(alarms["Condition"]["ArnLike"]["aws:SourceArn"], {})
    assert fnmatch.fnmatchcase(f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{STACK}-ApiLatencyAlarm-1AB2", pattern)
    assert not fnmatch.fnmatchcase(f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:other-stack-alarm", pattern)


def test_no_role_may_touch_transform_jobs_sluice_did_not_name(resources):
    touching = [(name, s) for name, s in all_role_statements(resources) if any("TransformJob" in a for a in actions(s))]
    assert {name for name, _ in touching} == {
        "ApiFunction",
        "BatchTransformStateMachine",
        "JobReaperFunction",
        "TransformStartFunction",
    }
    for name, statement in touching:
        resource = resolve(statement["Resource"], {})
        assert resource == f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:transform-job/job-*", name


# Opened whole by the platform team (BatchExtraBuckets: any caller, any prefix): nothing to narrow.
WHOLE_BUCKET_LISTS = {"ListTheExtraBatchBuckets", "CheckInputPrefixesInTheExtraBatchBuckets"}


def test_no_role_lists_the_data_bucket_beyond_sluices_own_prefixes(resources):
    listing = [(name, s) for name, s in all_role_statements(resources) if "s3:ListBucket" in actions(s)]
    assert listing
    for name, statement in listing:
        if statement["Sid"] in WHOLE_BUCKET_LISTS:
            assert "BatchExtraBuckets" in json.dumps(statement["Resource"]), (name, statement["Sid"])
            continue
        prefixes = statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        assert prefixes, (name, statement["Sid"])
        assert all(re.fullmatch(r"[a-z-]+/\*", prefix) for prefix in prefixes), prefixes


def test_downloads_from_an_extra_bucket_are_readable_objects_not_just_the_bucket(resources):
    buckets = {"BatchExtraBuckets": ["shared-features", "ml-scratch"]}
    api = [s for s in statements(resources["ApiFunction"]) if "s3:GetObject" in actions(s)]
    granted = {arn for s in api for arn in resolve(s["Resource"], buckets) if isinstance(arn, str)}

    assert {"arn:aws:s3:::shared-features/*", "arn:aws:s3:::ml-scratch/*"} <= granted
    # GetObject on a bucket ARN grants nothing: every GetObject resource names objects.
    assert all(arn.endswith("*") or "/" in arn.split(":::")[-1] for arn in granted), granted


def test_upload_tickets_are_counted_in_a_table_the_api_may_use(resources):
    table = resources["UploadTicketsTable"]["Properties"]
    (index,) = table["LocalSecondaryIndexes"]
    variables = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    granted = {s["Sid"]: s for s in statements(resources["ApiFunction"])}

    assert index["IndexName"] == BY_EXPIRY_INDEX
    assert [k["AttributeName"] for k in index["KeySchema"]] == ["caller", "expires_at"]
    assert table["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert table["SSESpecification"]["KMSMasterKeyId"] == {"Ref": "SluiceKey"}
    assert variables["SLUICE_UPLOAD_TICKETS_TABLE"] == {"Ref": "UploadTicketsTable"}
    assert variables["SLUICE_ASYNC_MAX_OPEN_UPLOADS"] == {"Ref": "AsyncMaxOpenUploads"}
    assert granted["CountACallersOpenUploadTickets"]["Resource"] == {
        "Fn::Sub": "${UploadTicketsTable.Arn}/index/" + BY_EXPIRY_INDEX
    }


def test_a_sagemaker_notification_that_keeps_failing_is_parked_not_lost(resources, translated, template):
    queue = resources["AsyncNotificationsQueue"]
    dead_letters = resources["AsyncNotificationsDeadLetterQueue"]
    (mapping,) = [
        r
        for r in translated.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
        and r["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["AsyncNotificationsQueue", "Arn"]}
    ]

    # SNS no longer invokes the function asynchronously (nowhere for failures to go): it fills a queue.
    assert "DeadLetterQueue" not in resources["AsyncNotificationsFunction"]["Properties"]
    assert "AsyncNotificationsDeadLetterKeyPolicy" not in resources
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert queue["Properties"]["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["AsyncNotificationsDeadLetterQueue", "Arn"]},
        "maxReceiveCount": {"Ref": "NotificationsMaxReceiveCount"},
    }
    for parked in (queue, dead_letters):
        assert parked["DeletionPolicy"] == "Retain"
        assert parked["Properties"]["KmsMasterKeyId"] == {"Ref": "SluiceKey"}
    subscriptions = [r["Properties"] for r in resources.values() if r["Type"] == "AWS::SNS::Subscription"]
    to_queue = [p for p in subscriptions if p["Endpoint"] == {"Fn::GetAtt": ["AsyncNotificationsQueue", "Arn"]}]
    assert sorted(p["TopicArn"]["Ref"] for p in to_queue) == ["AsyncErrorTopic", "AsyncSuccessTopic"]
    assert all(p["Protocol"] == "sqs" and p["RawMessageDelivery"] is True for p in to_queue)
    (statement,) = resources["AsyncNotificationsQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Condition"]["ArnEquals"]["aws:SourceArn"] == [
        {"Ref": "AsyncSuccessTopic"},
        {"Ref": "AsyncErrorTopic"},
    ]
    assert statement["Principal"] == {"Service": "sns.amazonaws.com"}


def test_the_announcer_reads_final_transitions_from_the_stream_and_parks_what_it_cannot_announce(resources, translated):
    table = resources["JobsTable"]["Properties"]
    (mapping,) = [
        r
        for r in translated.values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
        and r["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["JobsTable", "StreamArn"]}
    ]
    properties = mapping["Properties"]
    (index,) = [i for i in table["GlobalSecondaryIndexes"] if i["IndexName"] == PENDING_ANNOUNCEMENTS_INDEX]

    assert table["StreamSpecification"] == {"StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert [k["AttributeName"] for k in index["KeySchema"]] == [ANNOUNCE_PENDING, "finished_at"]
    assert properties["FunctionName"] == {"Ref": "JobAnnouncerFunction"}
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BisectBatchOnFunctionError"] is True
    assert properties["MaximumRetryAttempts"] == {"Ref": "AnnouncerMaxRetryAttempts"}
    assert properties["MaximumRecordAgeInSeconds"] == {"Ref": "AnnouncerMaxRecordAgeSeconds"}
    assert properties["DestinationConfig"]["OnFailure"]["Destination"] == {
        "Fn::GetAtt": ["JobAnnouncerDeadLetterQueue", "Arn"]
    }
    assert len(properties["FilterCriteria"]["Filters"]) == 2
    assert resources["JobAnnouncerDeadLetterQueue"]["Properties"]["KmsMasterKeyId"] == {"Ref": "SluiceKey"}


@pytest.mark.parametrize(
    ("alarm", "metric", "dimension"),
    [
        (
            "JobAnnouncerDeadLetterAlarm",
            "ApproximateNumberOfMessagesVisible",
            {"Fn::GetAtt": ["JobAnnouncerDeadLetterQueue", "QueueName"]},
        ),
        (
            "AsyncNotificationsDeadLetterQueueAlarm",
            "ApproximateNumberOfMessagesVisible",
            {"Fn::GetAtt": ["AsyncNotificationsDeadLetterQueue", "QueueName"]},
        ),
        ("JobAnnouncerErrorsAlarm", "Errors", {"Ref": "JobAnnouncerFunction"}),
        ("AsyncNotificationsErrorsAlarm", "Errors", {"Ref": "AsyncNotificationsFunction"}),
    ],
)
def test_a_parked_announcement_or_notification_and_any_error_alarm_the_alarm_topic(resources, alarm, metric, dimension):
    properties = resources[alarm]["Properties"]

    assert properties["MetricName"] == metric
    assert [d["Value"] for d in properties["Dimensions"]] == [dimension]
    assert (properties["Threshold"], properties["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    assert properties["AlarmActions"] == [{"Ref": "AlarmTopic"}]

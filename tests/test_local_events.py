"""Local mode runs a template's functions when SNS or S3 invokes them.

moto's CloudFormation creates neither topic subscriptions nor bucket notification configurations;
local mode creates them through the APIs once the stack exists (deploy.connect_event_sources), and
moto then delivers: SNS publish -> function, S3 put -> function, S3 put -> SQS -> event source
mapping -> function. The fixture template (tests/fixtures/local_events) has one recording function
per path; each function's module keeps the events it received.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import unquote_plus

import boto3
import pytest

from sluice_local.__main__ import banner
from sluice_local.cfn_adapt import LOCAL_OUTPUT_PREFIX, OUTPUT_MARKER, adapt
from sluice_local.deploy import connect_event_sources, deploy_template
from sluice_local.lambdas import LambdaRunner, install_moto_lambda_router
from sluice_local.stack import Started
from tests.conftest import FIXTURES

REGION = "us-east-1"
STACK = "sluice-events"
TEMPLATE = FIXTURES / "local_events" / "template.yaml"
FUNCTIONS = ("OnTopicFunction", "OnUploadFunction", "OnInboxFunction")


@pytest.fixture(scope="module")
def client(moto):
    def make(service: str):
        return boto3.client(
            service,
            endpoint_url=moto.url,
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    return make


@pytest.fixture(scope="module")
def stack(moto):
    """Deployed as `make local` does: functions routed in-process before the events are connected."""
    deployment = deploy_template(TEMPLATE, aws_url=moto.url, stack_name=STACK, region=REGION, connect_events=False)
    pending = list(deployment.pending)
    runner = LambdaRunner(deployment.functions, deployment.root)
    uninstall = install_moto_lambda_router(runner)
    connect_event_sources(deployment)
    # What arrived while connecting (S3 sends a test event to a notification's queues).
    at_connect = {name: list(recorded(runner, name)) for name in FUNCTIONS}
    yield deployment, runner, pending, at_connect
    uninstall()


@pytest.fixture
def deployment(stack):
    return stack[0]


@pytest.fixture
def runner(stack):
    _, runner, _, _ = stack
    for name in FUNCTIONS:
        recorded(runner, name).clear()
    return runner


def recorded(runner: LambdaRunner, name: str) -> list[dict]:
    """The events the function received (its module's EVENTS list)."""
    return sys.modules[runner.handler(name).__module__].EVENTS


def queue_arn(client, queue_url: str) -> str:
    return client("sqs").get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]


# ---------------------------------------------------------------------- what local mode creates
def test_subscriptions_and_bucket_notifications_wait_until_connected(stack):
    _, _, pending, _ = stack
    assert sorted((item.logical_id, item.part) for item in pending) == [
        ("ArchiveSubscription", None),
        ("InboxBucket", "NotificationConfiguration"),
        ("OnTopicFunctionPublished", None),  # SAM's name for the function's SNS event subscription
        ("UploadBucket", "NotificationConfiguration"),
    ]


def test_created_resources_are_reported_and_skipped_ones_keep_their_reason(deployment):
    created = {item.logical_id: item for item in deployment.created}
    assert {name: item.type for name, item in created.items()} == {
        "OnTopicFunctionPublished": "AWS::SNS::Subscription",
        "ArchiveSubscription": "AWS::SNS::Subscription",
        "UploadBucket": "AWS::S3::Bucket NotificationConfiguration",
        "InboxBucket": "AWS::S3::Bucket NotificationConfiguration",
    }
    assert "SNS API" in created["ArchiveSubscription"].reason
    assert "S3 API" in created["UploadBucket"].reason
    assert created["UploadBucket"].physical_id == deployment.resources["UploadBucket"]
    for name in ("OnTopicFunctionPublished", "ArchiveSubscription"):
        assert created[name].physical_id.startswith(deployment.resources["Topic"] + ":")
        assert deployment.resources[name] == created[name].physical_id
        assert deployment.resource_types[name] == "AWS::SNS::Subscription"

    skipped = {item.logical_id: item for item in deployment.skipped}
    # Its Condition is false: AWS would not create it either.
    assert (
        skipped["ArchiveEmailSubscription"].reason == "condition HasArchiveEmail is false (not created on AWS either)"
    )
    assert "cannot create AWS::SQS::QueuePolicy" in skipped["InboxQueuePolicy"].reason
    assert not set(skipped) & set(created)
    assert not deployment.pending
    # The outputs that resolved the subscriptions' properties are not the template's.
    assert deployment.outputs == {"TopicArn": deployment.resources["Topic"]}


def test_subscriptions_carry_their_attributes(deployment, client):
    sns = client("sns")
    subscriptions = {
        s["SubscriptionArn"]: s
        for s in sns.list_subscriptions_by_topic(TopicArn=deployment.resources["Topic"])["Subscriptions"]
    }
    assert len(subscriptions) == 2
    function = subscriptions[deployment.resources["OnTopicFunctionPublished"]]
    assert (function["Protocol"], function["Endpoint"]) == ("lambda", deployment.functions["OnTopicFunction"].arn)
    attributes = sns.get_subscription_attributes(SubscriptionArn=function["SubscriptionArn"])["Attributes"]
    assert json.loads(attributes["FilterPolicy"]) == {"kind": ["report"]}

    archive = subscriptions[deployment.resources["ArchiveSubscription"]]
    assert (archive["Protocol"], archive["Endpoint"]) == (
        "sqs",
        queue_arn(client, deployment.resources["ArchiveQueue"]),
    )
    attributes = sns.get_subscription_attributes(SubscriptionArn=archive["SubscriptionArn"])["Attributes"]
    assert attributes["RawMessageDelivery"] == "true"


def test_bucket_notifications_are_applied_as_the_template_declares_them(deployment, client):
    s3 = client("s3")
    upload = s3.get_bucket_notification_configuration(Bucket=deployment.resources["UploadBucket"])
    (function,) = upload["LambdaFunctionConfigurations"]
    assert function["LambdaFunctionArn"] == deployment.functions["OnUploadFunction"].arn
    assert function["Events"] == ["s3:ObjectCreated:*"]
    rules = {rule["Name"].lower(): rule["Value"] for rule in function["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": "drop/", "suffix": ".csv"}

    inbox = s3.get_bucket_notification_configuration(Bucket=deployment.resources["InboxBucket"])
    (queue,) = inbox["QueueConfigurations"]
    assert queue["QueueArn"] == queue_arn(client, deployment.resources["InboxQueue"])


def test_banner_lists_what_local_mode_created(deployment):
    started = Started(
        api_url="http://127.0.0.1:1",
        aws_url="http://127.0.0.1:2",
        sagemaker_url="http://127.0.0.1:3",
        bedrock_url="http://127.0.0.1:4",
        api_key="k",
        key_generated=False,
        buckets=[],
        resources=deployment.resources,
        skipped=deployment.skipped,
        created=deployment.created,
    )
    text = banner(started)
    assert "AWS::SNS::Subscription x2 (" in text
    assert "AWS::S3::Bucket NotificationConfiguration x2 (" in text
    assert "AWS::SNS::Subscription x1 (ArchiveEmailSubscription): condition HasArchiveEmail is false" in text


# ---------------------------------------------------------------------- SNS -> function
def test_publish_runs_the_subscribed_function_with_an_sns_event(deployment, runner, client):
    sns, topic = client("sns"), deployment.resources["Topic"]
    published = sns.publish(
        TopicArn=topic,
        Message="quarterly numbers",
        Subject="Report",
        MessageAttributes={
            "kind": {"DataType": "String", "StringValue": "report"},
            "pages": {"DataType": "Number", "StringValue": "3"},
        },
    )
    # The filter policy keeps this one from the function (not from the unfiltered archive queue).
    sns.publish(TopicArn=topic, Message="noise", MessageAttributes={"kind": {"DataType": "String", "StringValue": "x"}})

    (event,) = recorded(runner, "OnTopicFunction")
    (record,) = event["Records"]
    assert record["EventSource"] == "aws:sns"
    assert record["EventSubscriptionArn"] == deployment.resources["OnTopicFunctionPublished"]
    message = record["Sns"]
    assert message["Type"] == "Notification"
    assert message["TopicArn"] == topic
    assert message["MessageId"] == published["MessageId"]
    assert (message["Message"], message["Subject"]) == ("quarterly numbers", "Report")
    assert message["MessageAttributes"] == {
        "kind": {"Type": "String", "Value": "report"},
        "pages": {"Type": "Number", "Value": "3"},
    }
    assert message["Timestamp"].startswith("20")
    assert not recorded(runner, "OnUploadFunction")
    assert not recorded(runner, "OnInboxFunction")


def test_a_message_without_subject_or_matching_attributes(deployment, runner, client):
    sns, topic = client("sns"), deployment.resources["Topic"]
    sns.publish(TopicArn=topic, Message="no attributes")  # the filter policy needs `kind`
    sns.publish(
        TopicArn=topic, Message="plain", MessageAttributes={"kind": {"DataType": "String", "StringValue": "report"}}
    )
    (event,) = recorded(runner, "OnTopicFunction")
    message = event["Records"][0]["Sns"]
    assert (message["Message"], message["Subject"]) == ("plain", None)


def test_a_raw_subscription_delivers_the_bare_message_to_its_queue(deployment, client):
    sqs, queue = client("sqs"), deployment.resources["ArchiveQueue"]
    sqs.purge_queue(QueueUrl=queue)
    client("sns").publish(TopicArn=deployment.resources["Topic"], Message="archived as is")
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10)["Messages"]
    assert [m["Body"] for m in messages] == ["archived as is"]


# ---------------------------------------------------------------------- S3 -> function
def test_put_under_the_filter_runs_the_function_with_an_s3_event(deployment, runner, client):
    s3, bucket = client("s3"), deployment.resources["UploadBucket"]
    for key in ("drop/q1 report.csv", "drop/q1.txt", "other/q1.csv", "drop.csv"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"a,b\n1,2\n")

    (event,) = recorded(runner, "OnUploadFunction")
    (record,) = event["Records"]
    assert (record["eventSource"], record["eventName"], record["awsRegion"]) == ("aws:s3", "ObjectCreated:Put", REGION)
    assert record["s3"]["bucket"]["name"] == bucket
    assert record["s3"]["bucket"]["arn"] == f"arn:aws:s3:::{bucket}"
    # URL-encoded as S3 does it: spaces as "+", slashes kept.
    assert record["s3"]["object"]["key"] == "drop/q1+report.csv"
    assert unquote_plus(record["s3"]["object"]["key"]) == "drop/q1 report.csv"
    assert record["s3"]["object"]["size"] == 8
    for field in ("userIdentity", "requestParameters", "responseElements"):
        assert field in record
    assert record["s3"]["object"]["sequencer"]
    assert not recorded(runner, "OnInboxFunction")
    assert not recorded(runner, "OnTopicFunction")


# ---------------------------------------------------------------------- S3 -> SQS -> function
def test_connecting_the_queue_sends_s3_test_event_through_the_mapping(stack):
    deployment, _, _, at_connect = stack
    (event,) = at_connect["OnInboxFunction"]
    body = json.loads(event["Records"][0]["body"])
    assert (body["Event"], body["Bucket"]) == ("s3:TestEvent", deployment.resources["InboxBucket"])
    assert not at_connect["OnUploadFunction"]  # S3 sends test events to queues and topics only


def test_put_under_the_prefix_reaches_the_function_through_the_queue(deployment, runner, client):
    s3, bucket = client("s3"), deployment.resources["InboxBucket"]
    s3.put_object(Bucket=bucket, Key="in/batch-1.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="out/batch-1.json", Body=b"{}")

    (event,) = recorded(runner, "OnInboxFunction")
    (record,) = event["Records"]
    inbox = deployment.resources["InboxQueue"]
    assert (record["eventSource"], record["eventSourceARN"]) == ("aws:sqs", queue_arn(client, inbox))
    (s3_record,) = json.loads(record["body"])["Records"]
    assert s3_record["eventName"] == "ObjectCreated:Put"
    assert (s3_record["s3"]["bucket"]["name"], s3_record["s3"]["object"]["key"]) == (bucket, "in/batch-1.json")
    # The function succeeded, so the mapping deleted the message.
    attributes = client("sqs").get_queue_attributes(QueueUrl=inbox, AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == (
        "0",
        "0",
    )
    assert not recorded(runner, "OnUploadFunction")


# ---------------------------------------------------------------------- cfn_adapt
def test_deferred_resources_are_resolved_through_outputs_with_their_condition():
    adapted = adapt(
        {
            "Conditions": {"On": {"Fn::Equals": ["a", "a"]}},
            "Resources": {
                "Topic": {"Type": "AWS::SNS::Topic"},
                "Fn": {"Type": "AWS::Lambda::Function", "Properties": {}},
                "Sub": {
                    "Type": "AWS::SNS::Subscription",
                    "Condition": "On",
                    "Properties": {
                        "TopicArn": {"Ref": "Topic"},
                        "Protocol": "lambda",
                        "Endpoint": {"Fn::GetAtt": ["Fn", "Arn"]},
                        "FilterPolicy": {"kind": ["report"]},
                    },
                },
                "Orphan": {
                    "Type": "AWS::SNS::Subscription",
                    "Properties": {"TopicArn": {"Ref": "Api"}, "Protocol": "sqs", "Endpoint": "x"},
                },
                "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {}},
            },
            "Outputs": {f"{LOCAL_OUTPUT_PREFIX}0": {"Value": "the template's own"}},
        }
    )
    assert set(adapted.template["Resources"]) == {"Topic", "Fn"}
    (deferred,) = adapted.deferred
    assert (deferred.logical_id, deferred.part, deferred.condition) == ("Sub", None, "On")
    outputs = adapted.template["Outputs"]
    assert outputs[f"{LOCAL_OUTPUT_PREFIX}0"] == {"Value": "the template's own"}
    assert outputs[deferred.condition_output] == {"Value": "true", "Condition": "On"}
    topic_key = deferred.properties["TopicArn"][OUTPUT_MARKER]
    endpoint_key = deferred.properties["Endpoint"][OUTPUT_MARKER]
    assert outputs[topic_key] == {"Value": {"Ref": "Topic"}, "Condition": "On"}
    assert outputs[endpoint_key] == {"Value": {"Fn::GetAtt": ["Fn", "Arn"]}, "Condition": "On"}
    assert deferred.properties["FilterPolicy"] == {"kind": ["report"]}
    assert sorted(adapted.local_outputs) == sorted({deferred.condition_output, topic_key, endpoint_key})
    skipped = {item.logical_id: item for item in adapted.skipped}
    assert skipped["Orphan"].reason == "refers to Api, which is not in the local stack"

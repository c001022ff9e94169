"""Notifications that prove where they come from, without a stack: webhook signatures and their replay
window, per-caller secrets and callback topics (and the tools/keys.py commands that make them), the
addresses a webhook may reach (DNS rebinding, IPv6 and NAT64 forms), and SNS throttling being retried.

The stack-level attacks (forged SageMaker notifications, another tenant's topic, an unreachable
webhook through the workflow) are in test_jobs_notifications.py.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time

import boto3
import pytest
from botocore.stub import Stubber

from sluice.jobs import callback_topics
from sluice.jobs.callback_topics import TopicsCache
from sluice.jobs.models import Callback, Job, JobKind, JobStatus
from sluice.jobs.notify import UNREACHABLE, CallbackFailed, EventPublishFailed, deliver_callback, publish_job_event
from sluice.jobs.webhook_address import resolve_targets, why_not_public
from sluice.jobs.webhook_secrets import SecretCache, caller_segment, secret_parameter_name
from sluice.jobs.webhook_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook, verify_webhook
from sluice.settings import Settings
from tests.conftest import shared_client
from tests.test_auth_keys import load_tool
from tests.test_jobs_notifications import WebhookReceiver, self_signed_certificate

SECRETS_PATH = "/sluice/unit/webhook-secrets"
TOPIC = "arn:aws:sns:us-east-1:123456789012:risk-results"


def job_of(caller: str, callback: Callback | None) -> Job:
    return Job(
        job_id="job-1",
        caller=caller,
        kind=JobKind.ASYNC,
        model="iris",
        status=JobStatus.SUCCEEDED,
        input_location=f"s3://b/async/{caller}/job-1/input",
        output_location=f"s3://b/async/{caller}/job-1/output",
        callback=callback,
    )


def settings(**overrides) -> Settings:
    values = {
        "webhook_secrets_path": SECRETS_PATH,
        "webhook_allow_private_hosts": False,
        "webhook_timeout_seconds": 1.0,
        "callback_topic_arn_patterns": ("arn:aws:sns:us-east-1:123456789012:*",),
    }
    return Settings(**(values | overrides))


def deliver(job: Job, config: Settings, *, secrets=None, topics=None, sns=None, resolver=None):
    return deliver_callback(
        job,
        config,
        sns_client=sns or (lambda region: pytest.fail("no SNS call expected")),
        webhook_secret=secrets or (lambda caller: "whsec_unit"),
        callback_topics=topics or (lambda caller: ()),
        resolver=resolver,
    )


# ---------------------------------------------------------------------- signatures and their replay window
BODY = b'{"job":{"job_id":"job-1","status":"SUCCEEDED"},"type":"sluice.job.finished"}'


def test_the_signature_covers_the_timestamp_and_the_exact_body():
    signature = sign_webhook("whsec_a", BODY, 1_700_000_000)
    assert signature.startswith("v1=")
    assert len(signature) == len("v1=") + 64
    assert verify_webhook("whsec_a", BODY, "1700000000", signature, now=1_700_000_010, tolerance_seconds=300)
    assert not verify_webhook("whsec_a", BODY + b" ", "1700000000", signature, now=1_700_000_010, tolerance_seconds=300)


def test_a_captured_delivery_replayed_after_the_window_is_refused():
    signature = sign_webhook("whsec_a", BODY, 1_700_000_000)
    assert not verify_webhook("whsec_a", BODY, "1700000000", signature, now=1_700_000_301, tolerance_seconds=300)
    assert not verify_webhook("whsec_a", BODY, "1700000000", signature, now=1_699_999_699, tolerance_seconds=300)


def test_a_replay_with_a_fresh_timestamp_does_not_verify():
    signature = sign_webhook("whsec_a", BODY, 1_700_000_000)
    assert not verify_webhook("whsec_a", BODY, "1700000500", signature, now=1_700_000_500, tolerance_seconds=300)
    assert not verify_webhook("whsec_a", BODY, "not-a-number", signature, now=1_700_000_000, tolerance_seconds=300)


def test_any_one_of_several_signatures_may_match():
    signature = sign_webhook("whsec_a", BODY, 1_700_000_000)
    both = f"v1={'0' * 64}, {signature}"
    assert verify_webhook("whsec_a", BODY, 1_700_000_000, both, now=1_700_000_000, tolerance_seconds=300)
    assert not verify_webhook(
        "whsec_a", BODY, 1_700_000_000, f"v1={'0' * 64}", now=1_700_000_000, tolerance_seconds=300
    )


# ---------------------------------------------------------------------- per-caller secrets
def test_caller_segments_are_distinct_for_identities_the_old_mapping_merged():
    names = {secret_parameter_name(SECRETS_PATH, caller) for caller in ("user/a/b", "user/a_b", "user:a:b", "user_a_b")}
    assert len(names) == 4
    assert all(len(name.rsplit("/", 1)[1]) == 64 for name in names)


@pytest.fixture
def receiver(tmp_path, monkeypatch):
    cert, key = self_signed_certificate(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    server = WebhookReceiver(cert, key)
    yield server
    server.stop()


def test_one_tenants_secret_cannot_forge_another_tenants_webhooks(receiver):
    own = {"team-risk": "whsec_risk", "team-fraud": "whsec_fraud"}
    config = settings(webhook_allow_private_hosts=True)
    for caller in own:
        delivery = deliver(
            job_of(caller, Callback(webhook_url=f"{receiver.url}/{caller}")), config, secrets=own.__getitem__
        )
        assert delivery.delivered is True
    for caller, secret in own.items():
        [request] = receiver.to(f"/{caller}")
        headers = {name.lower(): value for name, value in request["headers"].items()}
        signature, timestamp = headers[SIGNATURE_HEADER.lower()], headers[TIMESTAMP_HEADER.lower()]
        other = next(value for name, value in own.items() if name != caller)
        now = time.time()
        assert verify_webhook(secret, request["body"], timestamp, signature, now=now, tolerance_seconds=300)
        assert not verify_webhook(other, request["body"], timestamp, signature, now=now, tolerance_seconds=300)


def test_a_caller_without_a_webhook_secret_is_not_called_and_told_how_to_get_one(receiver):
    delivery = deliver(
        job_of("team-new", Callback(webhook_url=f"{receiver.url}/new")),
        settings(webhook_allow_private_hosts=True),
        secrets=lambda caller: None,
    )
    assert delivery.delivered is False
    assert "team-new has no webhook signing secret" in delivery.reason
    assert "tools/keys.py --stack <stack> webhook-secret --tenant team-new" in delivery.reason
    assert receiver.to("/new") == []


def test_webhooks_are_not_called_when_the_platform_has_no_secrets_path():
    delivery = deliver(
        job_of("team-risk", Callback(webhook_url="https://hooks.example.com/x")),
        settings(webhook_secrets_path=""),
        secrets=lambda caller: pytest.fail("no secret may be read"),
    )
    assert delivery.delivered is False
    assert "SLUICE_WEBHOOK_SECRETS_PATH is empty" in delivery.reason


class CountingSsm:
    """The moto SSM client, counting GetParameter calls."""

    def __init__(self) -> None:
        self.client = shared_client("ssm")
        self.reads = 0

    def get_parameter(self, **request):
        self.reads += 1
        return self.client.get_parameter(**request)


def test_webhook_secrets_are_read_once_per_caller_and_ttl_misses_included(aws):
    ssm = CountingSsm()
    ssm.client.put_parameter(
        Name=secret_parameter_name(SECRETS_PATH, "team-risk"), Value="whsec_1", Type="SecureString", Overwrite=True
    )
    clock = [0.0]
    cache = SecretCache(lambda: ssm, SECRETS_PATH, 60, clock=lambda: clock[0])

    assert [cache("team-risk"), cache("team-risk"), cache("nobody"), cache("nobody")] == [
        "whsec_1",
        "whsec_1",
        None,
        None,
    ]
    assert ssm.reads == 2
    ssm.client.put_parameter(
        Name=secret_parameter_name(SECRETS_PATH, "team-risk"), Value="whsec_2", Type="SecureString", Overwrite=True
    )
    assert cache("team-risk") == "whsec_1"
    clock[0] = 61
    assert cache("team-risk") == "whsec_2"
    assert ssm.reads == 3


def test_keys_tool_creates_a_callers_secret_once_and_rotates_it_on_request(aws, capsys):
    tool = load_tool()
    flags = ["--stack", "sluice-dev", "--region", "us-east-1"]
    name = f"/sluice/sluice-dev/webhook-secrets/{caller_segment('team-risk')}"

    assert tool.main([*flags, "webhook-secret", "--tenant", "team-risk"]) == 0
    printed = capsys.readouterr().out
    stored = shared_client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]
    assert stored["Type"] == "SecureString"
    assert stored["Value"].startswith("whsec_")
    assert stored["Value"] in printed
    assert name in printed

    assert tool.main([*flags, "webhook-secret", "--tenant", "team-risk"]) == 1
    assert "--rotate" in capsys.readouterr().err
    assert shared_client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"] == stored["Value"]

    assert tool.main([*flags, "webhook-secret", "--tenant", "team-risk", "--rotate"]) == 0
    rotated = shared_client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    assert rotated != stored["Value"]
    assert rotated in capsys.readouterr().out


# ---------------------------------------------------------------------- per-caller callback topics
def test_a_topic_allowed_for_another_caller_is_refused_without_publishing():
    topics = {"team-risk": (TOPIC,), "team-fraud": ("arn:aws:sns:us-east-1:123456789012:fraud-*",)}
    delivery = deliver(
        job_of("team-fraud", Callback(sns_topic_arn=TOPIC)), settings(), topics=lambda caller: topics.get(caller, ())
    )
    assert delivery.delivered is False
    assert "not among the callback topics allowed for this caller" in delivery.reason


def test_a_callers_topic_outside_the_stack_ceiling_is_refused():
    delivery = deliver(
        job_of("team-risk", Callback(sns_topic_arn=TOPIC)),
        settings(callback_topic_arn_patterns=("arn:aws:sns:us-east-1:123456789012:platform-*",)),
        topics=lambda caller: (TOPIC,),
    )
    assert delivery.delivered is False
    assert "CallbackTopicArnPatterns" in delivery.reason


def test_the_callback_topics_document_is_read_once_per_ttl_and_a_broken_one_allows_nothing(aws):
    ssm = CountingSsm()
    name = "/sluice/unit/callback-topics"
    ssm.client.put_parameter(
        Name=name, Value=json.dumps({"version": 1, "callers": {"team-risk": [TOPIC]}}), Type="String", Overwrite=True
    )
    clock = [0.0]
    cache = TopicsCache(lambda: ssm, name, 30, clock=lambda: clock[0])
    assert [cache("team-risk"), cache("team-fraud"), cache("team-risk")] == [(TOPIC,), (), (TOPIC,)]
    assert ssm.reads == 1
    ssm.client.put_parameter(Name=name, Value='{"version": 1, "callers": {"team-risk": "oops"}}', Overwrite=True)
    clock[0] = 31
    assert cache("team-risk") == ()
    assert ssm.reads == 2


def test_keys_tool_sets_shows_and_clears_a_callers_topics(aws, capsys):
    tool = load_tool()
    flags = ["--stack", "sluice-dev", "--region", "us-east-1", "callback-topics"]
    name = "/sluice/sluice-dev/callback-topics"

    assert tool.main([*flags, "--tenant", "team-risk", "--allow", TOPIC, "--allow", f"{TOPIC}-*"]) == 0
    assert tool.main([*flags, "--tenant", "team-fraud", "--allow", "arn:aws:sns:us-east-1:123456789012:f-*"]) == 0
    document = callback_topics.parse(shared_client("ssm").get_parameter(Name=name)["Parameter"]["Value"])
    assert document.patterns_for("team-risk") == (TOPIC, f"{TOPIC}-*")
    capsys.readouterr()
    assert tool.main([*flags, "--tenant", "team-risk"]) == 0
    assert f"{TOPIC}-*" in capsys.readouterr().out
    assert tool.main([*flags, "--tenant", "team-risk", "--allow", "arn:aws:sqs:us-east-1:1:q"]) == 1
    assert tool.main([*flags, "--tenant", "team-risk", "--clear"]) == 0
    document = callback_topics.parse(shared_client("ssm").get_parameter(Name=name)["Parameter"]["Value"])
    assert document.patterns_for("team-risk") == ()
    assert document.patterns_for("team-fraud") == ("arn:aws:sns:us-east-1:123456789012:f-*",)


# ---------------------------------------------------------------------- SNS throttling is retried
@pytest.mark.parametrize("code", ["Throttled", "KMSThrottling"])
def test_sns_throttling_of_a_callback_is_retried_not_recorded_as_a_refusal(code):
    client = boto3.client("sns", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_client_error("publish", service_error_code=code, http_status_code=400)
        with pytest.raises(CallbackFailed, match=code):
            deliver(
                job_of("team-risk", Callback(sns_topic_arn=TOPIC)),
                settings(),
                topics=lambda caller: (TOPIC,),
                sns=lambda region: client,
            )


@pytest.mark.parametrize("code", ["Throttled", "KMSThrottling"])
def test_sns_throttling_of_the_job_events_topic_is_retried(code):
    client = boto3.client("sns", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x")
    with Stubber(client) as stub:
        stub.add_client_error("publish", service_error_code=code, http_status_code=400)
        with pytest.raises(EventPublishFailed):
            publish_job_event(client, TOPIC, job_of("team-risk", None))


# ---------------------------------------------------------------------- where a webhook may go
REFUSED = [
    "0.0.0.0",
    "127.0.0.1",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "100.64.0.1",
    "169.254.169.254",
    "224.0.0.1",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::ffff:10.0.0.1",
    "::ffff:127.0.0.1",
    "::10.0.0.1",
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "64:ff9b:1:a00:0:100::",  # local-use NAT64 (/48) of 10.0.0.1
    "64:ff9b:1:808:8:800::",  # local-use NAT64 of 8.8.8.8: the prefix itself is not public
    "2002:a00:1::1",  # 6to4 of 10.0.0.1
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo (its client: 10.0.0.1)
    "fec0::1",
    "fc00::1",
    "fd00:ec2::254",
    "fe80::1",
    "ff02::1",
    "ff0e::1",
]


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_address_forms_are_refused(address):
    assert why_not_public(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_are_allowed(address):
    assert why_not_public(ipaddress.ip_address(address)) is None


def answers(*addresses: str, port: int = 443):
    return [
        (socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))
        for address in addresses
    ]


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "64:ff9b::a00:1", "::ffff:10.0.0.1"])
def test_a_webhook_host_resolving_inside_is_refused_without_naming_the_address(address):
    delivery = deliver(
        job_of("team-risk", Callback(webhook_url="https://hooks.example.com/x")),
        settings(),
        resolver=lambda *args, **kwargs: answers(address),
    )
    assert delivery.delivered is False
    assert (
        delivery.reason == "Not called: the webhook host hooks.example.com does not resolve to public addresses only."
    )
    assert address not in delivery.reason


def test_a_name_with_one_public_and_one_private_address_is_refused():
    _, refused = resolve_targets(
        "hooks.example.com", 443, allow_private=False, resolver=lambda *a, **k: answers("93.184.215.14", "10.0.0.1")
    )
    assert [address for address, _ in refused] == ["10.0.0.1"]


def test_dns_rebinding_cannot_turn_a_checked_public_address_into_loopback(receiver, monkeypatch):
    """The first answer is public, every later one loopback: only a second lookup could reach the receiver."""
    port = int(receiver.url.rsplit(":", 1)[1])
    lookups: list[str] = []

    def rebinding(host, *args, **kwargs):
        lookups.append(host)
        return answers("93.184.215.14" if len(lookups) == 1 else "127.0.0.1", port=port)

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(CallbackFailed) as failure:
        deliver(job_of("team-risk", Callback(webhook_url=f"https://rebind.example.com:{port}/rebind")), settings())

    assert receiver.to("/rebind") == []
    assert lookups == ["rebind.example.com"]
    assert str(failure.value) == UNREACHABLE


def test_an_unreachable_webhook_gets_a_generic_error_not_the_connection_detail():
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens: the connection is refused
    with pytest.raises(CallbackFailed) as failure:
        deliver(
            job_of("team-risk", Callback(webhook_url=f"https://127.0.0.1:{port}/x")),
            settings(webhook_allow_private_hosts=True),
        )
    assert str(failure.value) == "Not delivered: the webhook could not be reached."


# ---------------------------------------------------------------------- what the announcer may read (template.yaml)
def test_the_announcer_may_read_only_its_stacks_webhook_secrets_and_callback_topics():
    from samtranslator.yaml_helper import yaml_parse

    from tests.conftest import ROOT

    resources = yaml_parse((ROOT / "template.yaml").read_text())["Resources"]
    statements = resources["JobAnnouncerFunction"]["Properties"]["Policies"][0]["Statement"]
    by_sid = {statement["Sid"]: statement for statement in statements if "Sid" in statement}
    reads = [statement for statement in by_sid.values() if "ssm:GetParameter" in str(statement["Action"])]
    assert [statement["Sid"] for statement in reads] == ["ReadCallersWebhookSecretsAndCallbackTopics"]
    resources_read = [entry["Fn::Sub"] for entry in reads[0]["Resource"]]
    assert [resource.split(":parameter", 1)[1] for resource in resources_read] == [
        "/sluice/${AWS::StackName}/webhook-secrets/*",
        "/sluice/${AWS::StackName}/callback-topics",
    ]
    decrypt = by_sid["DecryptCallersWebhookSecrets"]["Condition"]
    assert decrypt["StringEquals"]["kms:ViaService"] == {"Fn::Sub": "ssm.${AWS::Region}.amazonaws.com"}
    assert decrypt["StringLike"]["kms:EncryptionContext:PARAMETER_ARN"]["Fn::Sub"].endswith(
        ":parameter/sluice/${AWS::StackName}/webhook-secrets/*"
    )
    environment = resources["JobAnnouncerFunction"]["Properties"]["Environment"]["Variables"]
    assert environment["SLUICE_WEBHOOK_SECRETS_PATH"] == {"Fn::Sub": "/sluice/${AWS::StackName}/webhook-secrets"}
    assert environment["SLUICE_WEBHOOK_REPLAY_WINDOW_SECONDS"] == {"Ref": "WebhookReplayWindowSeconds"}


def test_a_webhook_url_with_an_impossible_port_is_refused_not_retried():
    delivery = deliver(job_of("team-risk", Callback(webhook_url="https://hooks.example.com:99999/x")), settings())
    assert delivery.delivered is False
    assert "no valid host and port" in delivery.reason

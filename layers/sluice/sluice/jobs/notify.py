"""A job's completion: published to the platform's job events topic and to the caller's callback.

The callback is the caller's SNS topic (only topics matching settings.callback_topic_arn_patterns,
which also scope the notifier's IAM) or an HTTPS webhook signed with HMAC-SHA256 over the exact body
(secret: an SSM SecureString, settings.webhook_secret_parameter). A failure that may clear up raises
CallbackFailed, which the workflow retries; one that cannot (refused topic, webhooks disabled, a 4xx
from the receiver) is recorded on the job and never fails it.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from sluice import __version__
from sluice.jobs.models import Job
from sluice.jobs.store import JobStore
from sluice.settings import Settings
from sluice.telemetry import logger

EVENT_TYPE = "sluice.job.finished"
SIGNATURE_HEADER = "X-Sluice-Signature-256"
DELIVERY_HEADER = "X-Sluice-Delivery"
_SNS_TRANSIENT = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "KMSThrottlingException",
    "KMSInternalException",
}


class EventPublishFailed(Exception):
    """The job events topic could not be reached; retried by the workflow."""


class CallbackFailed(Exception):
    """The caller's callback could not be delivered this time; retried by the workflow."""


class Delivery(BaseModel):
    """What happened to a callback; recorded on the job as details.notification."""

    delivered: bool
    channel: Literal["sns", "webhook"]
    target: str
    status_code: int | None = None
    reason: str | None = None


def completion_event(job: Job) -> dict[str, Any]:
    """The message every channel carries: the job as its caller sees it through the API."""
    view = job.model_dump(mode="json", exclude_none=True, exclude={"expires_at", "execution_id", "callback"})
    return {"type": EVENT_TYPE, "job": view}


def event_body(job: Job) -> bytes:
    # Compact and key-sorted: the bytes signed are the bytes sent, and equal jobs give equal bodies.
    return json.dumps(completion_event(job), separators=(",", ":"), sort_keys=True).encode()


def _attributes(job: Job) -> dict[str, dict[str, str]]:
    """For subscription filter policies (a team subscribes to its own caller's failures, say)."""
    values = {"caller": job.caller, "status": job.status.value, "kind": job.kind.value, "model": job.model}
    return {name: {"DataType": "String", "StringValue": value} for name, value in values.items() if value}


def publish_job_event(sns: Any, topic_arn: str, job: Job) -> str:
    try:
        answer = sns.publish(TopicArn=topic_arn, Message=event_body(job).decode(), MessageAttributes=_attributes(job))
    except (ClientError, BotoCoreError) as exc:
        raise EventPublishFailed(f"Could not publish job {job.job_id} to the job events topic: {exc}") from exc
    return answer["MessageId"]


def sign(secret: str | bytes, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, body): the receiver recomputes it over the raw body."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, body: bytes, signature: str) -> bool:
    return hmac.compare_digest(sign(secret, body), signature)


def deliver_callback(job: Job, settings: Settings, *, sns_client: Any, webhook_secret: Any) -> Delivery | None:
    """Deliver the job's callback once. `sns_client(region)` gives an SNS client for the topic's region;
    `webhook_secret()` reads the signing secret (cached). None when the job asked for no callback."""
    callback = job.callback
    if callback is None or not (callback.sns_topic_arn or callback.webhook_url):
        return None
    if callback.sns_topic_arn:
        return _publish_to_caller_topic(job, callback.sns_topic_arn, settings, sns_client)
    assert callback.webhook_url
    return _call_webhook(job, callback.webhook_url, settings, webhook_secret)


def record_delivery(store: JobStore, job_id: str, delivery: Delivery) -> None:
    store.merge_details(job_id, notification=delivery.model_dump(exclude_none=True))


def _publish_to_caller_topic(job: Job, topic_arn: str, settings: Settings, sns_client: Any) -> Delivery:
    patterns = settings.callback_topic_arn_patterns
    if not any(fnmatch.fnmatchcase(topic_arn, pattern) for pattern in patterns):
        return Delivery(
            delivered=False,
            channel="sns",
            target=topic_arn,
            reason=(
                "Not published: this topic is not among the callback topics the platform allows "
                "(stack parameter CallbackTopicArnPatterns); ask the platform team to add it."
            ),
        )
    region = topic_arn.split(":")[3]
    try:
        sns_client(region).publish(
            TopicArn=topic_arn, Message=event_body(job).decode(), MessageAttributes=_attributes(job)
        )
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _SNS_TRANSIENT or status >= 500:
            raise CallbackFailed(f"SNS topic {topic_arn} did not accept the notification ({code}).") from exc
        return Delivery(
            delivered=False,
            channel="sns",
            target=topic_arn,
            reason=f"Not published: SNS refused ({code}); the topic's policy must let Sluice publish.",
        )
    except BotoCoreError as exc:
        raise CallbackFailed(f"SNS topic {topic_arn} could not be reached: {exc}") from exc
    return Delivery(delivered=True, channel="sns", target=topic_arn)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ARG002
        return None  # a 3xx comes back as an HTTPError: the receiver must answer at its own URL


def _call_webhook(job: Job, url: str, settings: Settings, webhook_secret: Any) -> Delivery:
    if not settings.webhook_secret_parameter:
        return Delivery(
            delivered=False,
            channel="webhook",
            target=url,
            reason=(
                "Not called: webhooks are disabled on this platform (stack parameter "
                "WebhookSecretParameterName is empty). Poll the job, or use an SNS callback."
            ),
        )
    refused = _refused_host(url, settings)
    if refused:
        return Delivery(delivered=False, channel="webhook", target=url, reason=refused)
    body = event_body(job)
    request = urllib.request.Request(  # noqa: S310 - https only (Callback's pattern), checked host
        url,
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": f"Sluice-Webhook/{__version__}",
            "X-Sluice-Event": EVENT_TYPE,
            # Stable per job outcome: a receiver drops a redelivery it has already processed.
            DELIVERY_HEADER: f"{job.job_id}:{job.status.value}",
            SIGNATURE_HEADER: sign(webhook_secret(), body),
        },
    )
    opener = urllib.request.build_opener(
        _NoRedirects(), urllib.request.HTTPSHandler(context=ssl.create_default_context())
    )
    try:
        with opener.open(request, timeout=settings.webhook_timeout_seconds) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        if status in (408, 429) or status >= 500:
            raise CallbackFailed(f"Webhook {url} answered {status}.") from exc
        return Delivery(
            delivered=False,
            channel="webhook",
            target=url,
            status_code=status,
            reason=f"Not delivered: the webhook answered {status} (redirects are not followed).",
        )
    except (urllib.error.URLError, OSError) as exc:
        raise CallbackFailed(f"Webhook {url} could not be reached: {exc}") from exc
    logger.info("webhook delivered", extra={"job_id": job.job_id, "status_code": status})
    return Delivery(delivered=True, channel="webhook", target=url, status_code=status)


def _refused_host(url: str, settings: Settings) -> str | None:
    """A webhook may not point into private address space (metadata services, VPC hosts)."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        port = urllib.parse.urlsplit(url).port or 443
        addresses = {info[4][0] for info in socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)}
    except (socket.gaierror, ValueError) as exc:
        raise CallbackFailed(f"Webhook host {host!r} could not be resolved: {exc}") from exc
    if settings.webhook_allow_private_hosts:
        return None
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if not ip.is_global:
            return f"Not called: the webhook host {host} resolves to a non-public address ({ip})."
    return None


def announce_completion(
    job: Job,
    store: JobStore,
    settings: Settings,
    *,
    sns: Any,
    sns_client: Any,
    webhook_secret: Any,
    attempts: int = 3,
    pause: Any = None,
) -> Delivery | None:
    """Publish and call back outside a workflow (SageMaker's own async notifications): bounded
    in-process retries stand in for the state machine's Retry; what still fails is noted on the job."""
    import time

    wait = pause or time.sleep

    def retried(action: Any) -> Any:
        for attempt in range(1, attempts + 1):
            try:
                return action()
            except (EventPublishFailed, CallbackFailed):
                if attempt == attempts:
                    raise
                wait(attempt)
        return None

    try:
        retried(lambda: publish_job_event(sns, settings.job_events_topic_arn, job))
    except EventPublishFailed as exc:
        logger.error("job event not published", extra={"job_id": job.job_id, "error": str(exc)})
    try:
        delivery = retried(
            lambda: deliver_callback(job, settings, sns_client=sns_client, webhook_secret=webhook_secret)
        )
    except CallbackFailed as exc:
        callback = job.callback
        assert callback is not None
        channel: Literal["sns", "webhook"] = "sns" if callback.sns_topic_arn else "webhook"
        target = callback.sns_topic_arn or callback.webhook_url or ""
        delivery = Delivery(delivered=False, channel=channel, target=target, reason=f"Not delivered: {exc}")
    if delivery is not None:
        record_delivery(store, job.job_id, delivery)
    return delivery

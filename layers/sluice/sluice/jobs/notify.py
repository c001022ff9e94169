"""A job's completion: published to the platform's job events topic and to the caller's callback.

The callback is the caller's SNS topic (only topics allowed for that caller, within the stack's ceiling:
sluice.jobs.callback_topics) or an HTTPS webhook signed with the caller's own secret over the timestamp
and the exact body (sluice.jobs.webhook_signature, sluice.jobs.webhook_secrets). The webhook goes to the
address that was checked, never to a second DNS answer (sluice.jobs.webhook_address). A failure that may
clear up raises CallbackFailed, which the announcer's stream retries (sluice.jobs.announcer); one that
cannot (refused topic, no secret, a 4xx from the receiver) is recorded on the job and never fails it.
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from sluice import __version__
from sluice.jobs.callback_topics import refusal
from sluice.jobs.models import Job
from sluice.jobs.store import JobStore
from sluice.jobs.views import JobView
from sluice.jobs.webhook_address import Target, WebhookHostUnresolvable, resolve_targets
from sluice.jobs.webhook_secrets import SecretUnavailable
from sluice.jobs.webhook_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook
from sluice.settings import Settings
from sluice.telemetry import logger

EVENT_TYPE = "sluice.job.finished"
DELIVERY_HEADER = "X-Sluice-Delivery"
_SNS_TRANSIENT = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "KMSThrottlingException",
    # SNS's own wire codes for throttling (HTTP 400, so the status check below misses them).
    "Throttled",
    "KMSThrottling",
    "KMSInternalException",
}


class EventPublishFailed(Exception):
    """The job events topic could not be reached; retried (the stream record is delivered again)."""


class CallbackFailed(Exception):
    """The caller's callback could not be delivered this time; retried (the stream record is delivered again)."""


class Delivery(BaseModel):
    """What happened to a callback; recorded on the job as details.notification."""

    delivered: bool
    channel: Literal["sns", "webhook"]
    target: str
    status_code: int | None = None
    reason: str | None = None


# The announcer's own bookkeeping and the callback's outcome: not part of what is announced, and
# leaving them out keeps the body the same on every retry.
_UNANNOUNCED_DETAILS = frozenset({"announcement", "notification"})


def completion_event(job: Job) -> dict[str, Any]:
    """The message every channel carries: the job's public view (GET /v1/jobs/{id}, without download
    URLs: the job events topic has other readers than the caller). The callback target is left out
    for the same reason (a webhook URL may carry the caller's token)."""
    view = JobView.of(job).model_dump(mode="json", exclude_none=True, exclude={"callback"})
    view["details"] = {key: value for key, value in view.get("details", {}).items() if key not in _UNANNOUNCED_DETAILS}
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


SecretSource = Callable[[str], "str | None"]
TopicSource = Callable[[str], "tuple[str, ...]"]
# Stored on the job whatever went wrong: the exact connection error would tell a caller which
# internal ports answer. Operators find the detail in the notifier's logs.
UNREACHABLE = "Not delivered: the webhook could not be reached."


def deliver_callback(
    job: Job,
    settings: Settings,
    *,
    sns_client: Any,
    webhook_secret: SecretSource,
    callback_topics: TopicSource,
    resolver: Callable[..., list[Any]] | None = None,
) -> Delivery | None:
    """Deliver the job's callback once. `sns_client(region)` gives an SNS client for the topic's region;
    `webhook_secret(caller)` the caller's signing secret or None; `callback_topics(caller)` the topic
    patterns allowed for the caller (both cached). None when the job asked for no callback."""
    callback = job.callback
    if callback is None or not (callback.sns_topic_arn or callback.webhook_url):
        return None
    if callback.sns_topic_arn:
        return _publish_to_caller_topic(job, callback.sns_topic_arn, settings, sns_client, callback_topics)
    assert callback.webhook_url
    return _call_webhook(job, callback.webhook_url, settings, webhook_secret, resolver)


def record_delivery(store: JobStore, job_id: str, delivery: Delivery) -> None:
    store.merge_details(job_id, notification=delivery.model_dump(exclude_none=True))


def _publish_to_caller_topic(
    job: Job, topic_arn: str, settings: Settings, sns_client: Any, callback_topics: TopicSource
) -> Delivery:
    refused = refusal(topic_arn, callback_topics(job.caller), settings)
    if refused:
        logger.warning("callback topic refused", extra={"job_id": job.job_id, "caller": job.caller, "topic": topic_arn})
        return Delivery(delivered=False, channel="sns", target=topic_arn, reason=f"Not published: {refused}.")
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


def _call_webhook(
    job: Job, url: str, settings: Settings, webhook_secret: SecretSource, resolver: Callable[..., list[Any]] | None
) -> Delivery:
    def refused(reason: str) -> Delivery:
        return Delivery(delivered=False, channel="webhook", target=url, reason=reason)

    if not settings.webhook_secrets_path:
        return refused(
            "Not called: webhooks are not configured on this platform (SLUICE_WEBHOOK_SECRETS_PATH is empty). "
            "Poll the job, or use an SNS callback."
        )
    try:
        secret = webhook_secret(job.caller)
    except SecretUnavailable as exc:
        logger.error("webhook secret unreadable", extra={"job_id": job.job_id, "problem": str(exc)})
        raise CallbackFailed("Not delivered: the webhook signing secret could not be read.") from exc
    if not secret:
        return refused(
            f"Not delivered: caller {job.caller} has no webhook signing secret. The platform team creates one "
            f"with `tools/keys.py --stack <stack> webhook-secret --tenant {job.caller}` and gives it to the "
            "receiver; the caller's later jobs are signed with it."
        )
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or 443
    except ValueError:
        port = 0
    if not host or not 0 < port < 65536:
        return refused("Not called: the webhook URL has no valid host and port.")
    try:
        targets, refused_addresses = resolve_targets(
            host, port, allow_private=settings.webhook_allow_private_hosts, resolver=resolver
        )
    except WebhookHostUnresolvable as exc:
        logger.warning("webhook host unresolvable", extra={"job_id": job.job_id, "host": host, "problem": str(exc)})
        raise CallbackFailed(UNREACHABLE) from exc
    if refused_addresses:
        logger.warning(
            "webhook to a non-public address refused",
            extra={"job_id": job.job_id, "host": host, "addresses": refused_addresses},
        )
        return refused(f"Not called: the webhook host {host} does not resolve to public addresses only.")
    body = event_body(job)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": f"Sluice-Webhook/{__version__}",
        "X-Sluice-Event": EVENT_TYPE,
        # Stable per job outcome: a receiver drops a redelivery it has already processed.
        DELIVERY_HEADER: f"{job.job_id}:{job.status.value}",
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign_webhook(secret, body, timestamp),
    }
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    status = _post_to_checked_address(job, host, targets, path, headers, body, settings.webhook_timeout_seconds)
    if status in (408, 429) or status >= 500:
        raise CallbackFailed(f"Not delivered: the webhook answered {status}.")
    if not 200 <= status < 300:
        return Delivery(
            delivered=False,
            channel="webhook",
            target=url,
            status_code=status,
            reason=f"Not delivered: the webhook answered {status} (redirects are not followed).",
        )
    logger.info("webhook delivered", extra={"job_id": job.job_id, "status_code": status})
    return Delivery(delivered=True, channel="webhook", target=url, status_code=status)


class _CheckedConnection(http.client.HTTPSConnection):
    """HTTPS over a socket already connected to a checked address; TLS verifies the URL's host name."""

    def __init__(self, host: str, target: Target, timeout: float) -> None:
        super().__init__(host, target.port, timeout=timeout)
        self._target = target

    def connect(self) -> None:
        raw = socket.socket(self._target.family, socket.SOCK_STREAM)
        raw.settimeout(self.timeout)
        try:
            # A numeric address: connect() does no name lookup of its own.
            raw.connect((self._target.address, self._target.port))
            self.sock = ssl.create_default_context().wrap_socket(raw, server_hostname=self.host)
        except BaseException:
            raw.close()
            raise


def _post_to_checked_address(
    job: Job, host: str, targets: list[Target], path: str, headers: dict[str, str], body: bytes, timeout: float
) -> int:
    problems = []
    for target in targets:
        connection = _CheckedConnection(host, target, timeout)
        try:
            connection.request("POST", path, body=body, headers=headers)
            response = connection.getresponse()
            response.read(65536)
            return response.status
        except (OSError, http.client.HTTPException) as exc:
            problems.append(f"{target.address}:{target.port}: {type(exc).__name__}: {exc}")
        finally:
            connection.close()
    logger.warning("webhook unreachable", extra={"job_id": job.job_id, "host": host, "problems": problems})
    raise CallbackFailed(UNREACHABLE)

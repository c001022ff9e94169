"""The events moto hands to Lambda from SNS and S3, made to carry what AWS's carry.

moto 5.2.5 delivers both (a lambda-protocol subscription, with its filter policy; a bucket's
LambdaConfigurations and QueueConfigurations, with their key filters), but:

- SNS -> Lambda: the event is a fixed example (TopicArn "arn:aws:sns:EXAMPLE", the message
  attributes {"Test", "TestBinary"} instead of the published ones, one MessageId for every message,
  Subject "TestInvoke" when none was given, a 1970 timestamp). Here it is built from the message.
- S3 events (to Lambda, SQS and SNS): the object key is encoded with its "/" as "%2F" (S3 keeps
  the slashes: "drop/a+b.csv"), and userIdentity, requestParameters, responseElements, the
  bucket's ownerIdentity and the object's sequencer are missing.

Delivery stays as moto does it: synchronous, within the Publish or PutObject request (Lambda runs
these asynchronously; a handler's error is logged, not retried).
"""

from __future__ import annotations

import itertools
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote_plus

from sluice_local.shared_patch import SharedPatch

logger = logging.getLogger(__name__)

LOCAL_PRINCIPAL = "AWS:LOCAL"
_sequence = itertools.count(1)


def install() -> Callable[[], None]:
    """Patch moto's SNS and S3 event builders (process-wide); returns a function that undoes it.

    Nested installs (a second embedded AWS in the same process) share one patch, removed with the last.
    """
    return _shared.install()


def _patch() -> Callable[[], None]:
    from moto.s3 import notifications
    from moto.sns.models import Subscription

    original_publish = Subscription.publish
    original_s3_event = notifications._get_s3_event

    def publish(
        self: Any,
        message: str,
        message_id: str,
        subject: str | None = None,
        message_attributes: dict[str, Any] | None = None,
        group_id: str | None = None,
        deduplication_id: str | None = None,
        message_structure: str | None = None,
    ) -> None:
        if self.protocol != "lambda":
            return original_publish(
                self,
                message,
                message_id,
                subject=subject,
                message_attributes=message_attributes,
                group_id=group_id,
                deduplication_id=deduplication_id,
                message_structure=message_structure,
            )
        # As moto does it for every protocol: the filter policy, then the per-protocol message.
        if self._filter_policy_matcher is not None and not self._filter_policy_matcher.matches(
            message_attributes, message
        ):
            return None
        if message_structure == "json":
            message = self._parse_message_structure(message, self.protocol)
        _invoke_for_sns(self, message, message_id, subject, message_attributes or {})
        return None

    def s3_event(event_name: str, bucket: Any, key: Any, notification_id: str) -> dict[str, Any]:
        event = original_s3_event(event_name, bucket, key, notification_id)
        for record in event["Records"]:
            _complete_s3_record(record, key)
        return event

    Subscription.publish = publish
    notifications._get_s3_event = s3_event

    def uninstall() -> None:
        Subscription.publish = original_publish
        notifications._get_s3_event = original_s3_event

    return uninstall


def sns_lambda_event(
    subscription_arn: str,
    topic_arn: str,
    message: str,
    message_id: str,
    subject: str | None,
    message_attributes: dict[str, Any],
    timestamp: str,
) -> dict[str, Any]:
    """The event Lambda receives from an SNS subscription (attributes as {"Type", "Value"})."""
    region = topic_arn.split(":")[3]
    return {
        "Records": [
            {
                "EventVersion": "1.0",
                "EventSubscriptionArn": subscription_arn,
                "EventSource": "aws:sns",
                "Sns": {
                    "SignatureVersion": "1",
                    "Timestamp": timestamp,
                    # Nothing can verify a signature of the embedded SNS.
                    "Signature": "LOCAL",
                    "SigningCertUrl": f"https://sns.{region}.amazonaws.com/SimpleNotificationService-local.pem",
                    "MessageId": message_id,
                    "Message": message,
                    "MessageAttributes": {
                        name: {"Type": value["Type"], "Value": value["Value"]}
                        for name, value in message_attributes.items()
                    },
                    "Type": "Notification",
                    "UnsubscribeUrl": (
                        f"https://sns.{region}.amazonaws.com/?Action=Unsubscribe&SubscriptionArn={subscription_arn}"
                    ),
                    "TopicArn": topic_arn,
                    "Subject": subject,
                },
            }
        ]
    }


def _invoke_for_sns(
    subscription: Any, message: str, message_id: str, subject: str | None, attributes: dict[str, Any]
) -> None:
    from moto.awslambda.utils import get_backend
    from moto.core.utils import iso_8601_datetime_with_milliseconds

    # arn:aws:lambda:region:account:function:name[:qualifier]
    parts = subscription.endpoint.split(":")
    name, qualifier = parts[6], (parts[7] if len(parts) > 7 else None)
    event = sns_lambda_event(
        subscription.arn,
        subscription.topic.arn,
        message,
        message_id,
        subject,
        attributes,
        iso_8601_datetime_with_milliseconds(),
    )
    try:
        function = get_backend(subscription.account_id, parts[3]).get_function(name, qualifier)
        function.invoke(json.dumps(event), {}, {})
    except Exception:  # a failed delivery does not fail Publish on AWS either
        logger.exception("SNS delivery to %s failed", subscription.endpoint)


def _complete_s3_record(record: dict[str, Any], key: Any) -> None:
    s3 = record["s3"]
    s3["object"]["key"] = quote_plus(key.name, safe="/")
    version = getattr(key, "version_id", None)
    if version and version != "null":
        s3["object"]["versionId"] = version
    s3["object"]["sequencer"] = f"{next(_sequence):016X}"
    s3["bucket"].setdefault("ownerIdentity", {"principalId": LOCAL_PRINCIPAL})
    record.setdefault("userIdentity", {"principalId": LOCAL_PRINCIPAL})
    record.setdefault("requestParameters", {"sourceIPAddress": "127.0.0.1"})
    record.setdefault(
        "responseElements",
        {"x-amz-request-id": uuid.uuid4().hex[:16].upper(), "x-amz-id-2": uuid.uuid4().hex},
    )


_shared = SharedPatch(_patch)

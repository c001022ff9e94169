"""SageMaker async inference notifications (AsyncSuccessTopic, AsyncErrorTopic) -> job status + completion.

Each SNS record carries one SageMaker message whose inferenceId is the job id. Duplicates and
out-of-order messages change nothing (forward-only transitions); unknown ids and malformed messages
are logged and skipped, never raised: a retry could not make them valid and SNS would redeliver.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.data_classes import SNSEvent, event_source
from pydantic import ValidationError

from sluice import clients
from sluice.jobs.kinds.async_inference.notifications import AsyncInferenceNotification, apply_notification
from sluice.jobs.notify import announce_completion
from sluice.jobs.notify_sources import callback_topics, sns_in, webhook_secret
from sluice.jobs.store import JobStore
from sluice.settings import get_settings
from sluice.telemetry import logger, tracer

settings = get_settings()
store = JobStore(clients.get("dynamodb"), settings.jobs_table, settings.job_ttl_days)
sns = clients.get("sns")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@event_source(data_class=SNSEvent)
def lambda_handler(event: SNSEvent, _context: Any) -> dict[str, int]:
    counts = {"succeeded": 0, "failed": 0, "unchanged": 0, "unknown_job": 0, "mismatch": 0, "malformed": 0}
    for record in event.records:
        message_id = record.sns.message_id
        try:
            note = AsyncInferenceNotification.model_validate(json.loads(record.sns.message))
        except (ValueError, ValidationError) as exc:
            counts["malformed"] += 1
            logger.warning(
                "malformed async inference notification skipped",
                extra={"message_id": message_id, "topic": record.sns.topic_arn, "problem": str(exc)[:500]},
            )
            continue
        try:
            outcome, job = apply_notification(store, note)
        except ValueError as exc:
            counts["malformed"] += 1
            logger.warning("incomplete notification skipped", extra={"message_id": message_id, "problem": str(exc)})
            continue
        counts[outcome] += 1
        extra = {"job_id": note.inference_id, "message_id": message_id, "outcome": outcome}
        if outcome == "unknown_job":
            logger.warning("notification for an unknown job skipped", extra=extra)
            continue
        if outcome == "mismatch":
            # Not the job's endpoint or input: a forged or misrouted message must not finish it.
            extra |= {
                "endpoint_name": note.request_parameters.endpoint_name,
                "input_location": note.request_parameters.input_location,
                "topic": record.sns.topic_arn,
            }
            logger.warning("notification not matching its job's endpoint and input ignored", extra=extra)
            continue
        logger.info("async inference notification applied", extra=extra)
        if job is not None:
            announce_completion(
                job,
                store,
                settings,
                sns=sns,
                sns_client=sns_in,
                webhook_secret=webhook_secret,
                callback_topics=callback_topics,
            )
    return counts

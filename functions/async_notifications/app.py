"""SageMaker async inference notifications (AsyncSuccessTopic, AsyncErrorTopic -> queue) -> job status.

SQS event source; the topics deliver raw messages, so each record's body is one SageMaker message whose
inferenceId is the job id. Duplicates and out-of-order messages change nothing (forward-only
transitions); unknown ids, mismatches and malformed messages are logged and skipped, never failed: a
retry could not make them valid. A failure that may clear up (DynamoDB throttling) fails the record,
which SQS delivers again and in the end parks in the notifications DLQ. Announcing the finished job is
the job announcer's (the jobs table's stream), not this function's.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from pydantic import ValidationError

from sluice.jobs import services
from sluice.jobs.kinds.async_inference.notifications import AsyncInferenceNotification, apply_notification
from sluice.telemetry import logger, tracer

store = services.store()
processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> str:
    message_id = record.message_id
    try:
        note = AsyncInferenceNotification.model_validate(json.loads(record.body))
    except (ValueError, ValidationError) as exc:
        logger.warning(
            "malformed async inference notification skipped",
            extra={"message_id": message_id, "queue": record.event_source_arn, "problem": str(exc)[:500]},
        )
        return "malformed"
    try:
        outcome, _job = apply_notification(store, note)
    except ValueError as exc:
        logger.warning("incomplete notification skipped", extra={"message_id": message_id, "problem": str(exc)})
        return "malformed"
    extra = {"job_id": note.inference_id, "message_id": message_id, "outcome": outcome}
    if outcome == "unknown_job":
        logger.warning("notification for an unknown job skipped", extra=extra)
    elif outcome == "mismatch":
        # Not the job's endpoint or input: a forged or misrouted message must not finish it.
        extra |= {
            "endpoint_name": note.request_parameters.endpoint_name,
            "input_location": note.request_parameters.input_location,
        }
        logger.warning("notification not matching its job's endpoint and input ignored", extra=extra)
    else:
        logger.info("async inference notification applied", extra=extra)
    return outcome


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)

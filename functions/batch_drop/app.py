"""Batch drop: each file created under batch-input/<model>/ in the data bucket starts one batch job.

SQS event source on BatchDropQueue (S3 notifications). A message whose job could not be started is
reported as a batch item failure: SQS retries it, then parks it in the dead-letter queue. Duplicate
deliveries start nothing twice (sluice.jobs.kinds.batch_transform.drop).
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from sluice.jobs.kinds.batch_transform.drop import handle_message
from sluice.telemetry import logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.SQS)


def record_handler(record: SQSRecord) -> None:
    for outcome in handle_message(record.body):
        # BatchDropStarted, BatchDropDuplicate, BatchDropRejected, BatchDropIgnored
        metrics.add_metric(name=f"BatchDrop{outcome.outcome.capitalize()}", unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)

"""Job announcer: every transition of a job into a final state, from the jobs table's stream, announced once.

DynamoDB stream event source (NEW_AND_OLD_IMAGES, filtered to final transitions). A record whose
announcement failed in a way that may clear up is reported as a batch item failure: the event source
mapping retries it (bisecting a failing batch), then sends the batch's description to the announcer's
DLQ; the job keeps its outbox marker, and the function's scheduled backlog run ({"backlog": true})
announces it later (sluice.jobs.announcer.announce_backlog).
"""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord

from sluice.jobs.announcer import announce_backlog, default_announcer
from sluice.settings import get_settings
from sluice.telemetry import logger, metrics, tracer

processor = BatchProcessor(event_type=EventType.DynamoDBStreams)
announcer = default_announcer()
METRICS = {
    "announced": "JobAnnounced",
    "already_announced": "JobAnnouncementRepeated",
    "busy": "JobAnnouncementBusy",
    "unknown_job": "JobAnnouncementUnknownJob",
}


def record_handler(record: DynamoDBRecord) -> None:
    outcome = announcer.announce_change(record.raw_event)
    if outcome in METRICS:
        metrics.add_metric(name=METRICS[outcome], unit=MetricUnit.Count, value=1)


@logger.inject_lambda_context(clear_state=True)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    if event.get("backlog") is True:
        # The schedule's run (template: AnnounceBacklog): jobs whose stream record was parked in the DLQ.
        settings = get_settings()
        return announce_backlog(
            announcer, settings.announcer_backlog_after_seconds, settings.announcer_backlog_max_jobs
        )
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)

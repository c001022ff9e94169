"""Workflow steps "Publish completion" (job events topic) and "Notify caller" (the job's callback).

Input: {"job_id", "channel": "events" | "callback"}. The job is read from the table, so what is sent
is what the API shows. CallbackFailed / EventPublishFailed are retried by the state machine; a
callback that cannot be delivered is recorded on the job (details.notification), never fatal.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from sluice import clients
from sluice.jobs.notify import deliver_callback, publish_job_event, record_delivery
from sluice.jobs.notify_sources import callback_topics, sns_in, webhook_secret
from sluice.jobs.status import JobNotFound
from sluice.jobs.store import JobStore
from sluice.settings import get_settings
from sluice.telemetry import logger, tracer

settings = get_settings()
store = JobStore(clients.get("dynamodb"), settings.jobs_table, settings.job_ttl_days)
sns = clients.get("sns")


class NotifyRequest(BaseModel):
    job_id: str
    channel: Literal["events", "callback"]


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    request = NotifyRequest.model_validate(event)
    logger.append_keys(job_id=request.job_id, channel=request.channel)
    job = store.get(request.job_id)
    if job is None:
        raise JobNotFound(f"Job {request.job_id} has no record.")
    if request.channel == "events":
        message_id = publish_job_event(sns, settings.job_events_topic_arn, job)
        callback = job.callback
        requested = bool(callback and (callback.sns_topic_arn or callback.webhook_url))
        logger.info("job event published", extra={"message_id": message_id, "status": job.status})
        return {"message_id": message_id, "callback_requested": requested}
    delivery = deliver_callback(
        job, settings, sns_client=sns_in, webhook_secret=webhook_secret, callback_topics=callback_topics
    )
    if delivery is None:
        return {"delivered": False, "reason": "The job asked for no callback."}
    record_delivery(store, job.job_id, delivery)
    logger.info("callback outcome", extra=delivery.model_dump(exclude_none=True))
    return delivery.model_dump(mode="json", exclude_none=True)

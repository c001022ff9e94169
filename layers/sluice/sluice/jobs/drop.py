"""The S3 drop: a file created under batch-input/<model>/ in the data bucket starts one batch job.

S3 notifications reach the function through an SQS queue, at least once and in any order. Each job
id is derived from the object's bucket, key and version (or, unversioned, its sequencer), so a
duplicate delivery finds its job already created (JobStore.create is a conditional write) and only
makes sure the execution was started; the execution is named after the job, so it starts once.

Dropped jobs belong to settings.batch_drop_caller (default "platform"): write access to the
batch-input/ prefix is the authorisation, so the caller's catalog rules are not consulted.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel

from sluice.errors import InvalidRequest
from sluice.inference.routing import current_catalog
from sluice.jobs import services
from sluice.jobs.batch import batch_details, batch_model_name
from sluice.jobs.models import Job, JobKind, JobStatus, utc_now
from sluice.jobs.starting import start_batch
from sluice.jobs.store import JobExists
from sluice.settings import get_settings
from sluice.storage.keys import batch_drop_model, batch_output_prefix, s3_uri
from sluice.telemetry import logger

# File extension -> content type; any other extension is sent as the first of settings.batch_content_types.
CONTENT_TYPES = {".csv": "text/csv", ".jsonl": "application/jsonlines", ".jsonlines": "application/jsonlines"}


class DropOutcome(BaseModel):
    key: str
    job_id: str | None = None
    # started | duplicate | rejected (a FAILED job records why) | ignored (not a drop)
    outcome: str


def drop_job_id(bucket: str, key: str, version: str) -> str:
    digest = hashlib.sha256(f"{bucket}\n{key}\n{version}".encode()).hexdigest()
    return f"job-{digest[:32]}"


def handle_message(body: str) -> list[DropOutcome]:
    """One SQS message (an S3 notification). Raises when a job could not be started, so SQS retries."""
    try:
        message = json.loads(body)
    except ValueError:
        logger.warning("drop message is not JSON; ignored", extra={"body_start": body[:200]})
        return []
    if not isinstance(message, dict):
        return []
    if message.get("Event") == "s3:TestEvent":
        logger.info("S3 test event ignored", extra={"bucket": message.get("Bucket")})
        return []
    return [handle_record(record) for record in message.get("Records") or []]


def handle_record(record: dict[str, Any]) -> DropOutcome:
    s3 = record.get("s3") or {}
    bucket = (s3.get("bucket") or {}).get("name", "")
    obj = s3.get("object") or {}
    # Keys arrive URL-encoded (a space as "+").
    key = unquote_plus(obj.get("key", ""))
    settings = get_settings()
    model = batch_drop_model(key)
    if not str(record.get("eventName", "")).startswith("ObjectCreated:") or model is None:
        logger.info(
            "not a batch drop; ignored (expected batch-input/<model>/<file>)",
            extra={"bucket": bucket, "key": key, "event": record.get("eventName")},
        )
        return DropOutcome(key=key, outcome="ignored")
    if bucket != settings.data_bucket:
        logger.warning("drop from an unexpected bucket; ignored", extra={"bucket": bucket, "key": key})
        return DropOutcome(key=key, outcome="ignored")
    version = obj.get("versionId") or obj.get("sequencer") or obj.get("eTag") or ""
    job = _drop_job(bucket, key, model, drop_job_id(bucket, key, version))
    store = services.store()
    try:
        job = store.create(job)
    except JobExists:
        existing = store.get(job.job_id)
        assert existing is not None, job.job_id
        if existing.execution_id or existing.status.terminal:
            logger.info("duplicate drop delivery", extra={"job_id": job.job_id, "key": key})
            return DropOutcome(key=key, job_id=job.job_id, outcome="duplicate")
        job = existing  # created by an attempt that did not get to start it
    if job.status == JobStatus.FAILED:
        logger.error("dropped file rejected", extra={"job_id": job.job_id, "key": key, "reason": job.failure_reason})
        return DropOutcome(key=key, job_id=job.job_id, outcome="rejected")
    # A start that fails raises: the message returns to the queue and, after the queue's
    # maxReceiveCount, is parked in the dead-letter queue.
    arn = start_batch(job, fail_job_on_error=False)
    logger.info("batch drop started", extra={"job_id": job.job_id, "key": key, "execution": arn})
    return DropOutcome(key=key, job_id=job.job_id, outcome="started")


def _drop_job(bucket: str, key: str, model: str, job_id: str) -> Job:
    settings = get_settings()
    caller = settings.batch_drop_caller
    common: dict[str, Any] = {
        "job_id": job_id,
        "caller": caller,
        "kind": JobKind.BATCH,
        "model": model,
        "input_location": s3_uri(bucket, key),
        "output_location": s3_uri(settings.data_bucket, batch_output_prefix(caller, job_id)),
    }
    extension = "." + key.rsplit(".", 1)[-1].lower() if "." in key.rsplit("/", 1)[-1] else ""
    content_type = CONTENT_TYPES.get(extension, settings.batch_content_types[0])
    # An invalid catalog raises (CatalogInvalid): the message is retried once the platform fixes it.
    entry = current_catalog().get(model)
    model_name, reason = None, None
    if entry is None:
        reason = f"model '{model}' (from the folder batch-input/{model}/) is not in the catalog."
    elif content_type not in settings.batch_content_types:
        reason = f"files of type {content_type} are not accepted for batch on this stack."
    else:
        try:
            model_name = batch_model_name(model, entry)
        except InvalidRequest as error:
            reason = error.message
    if reason is not None:
        # Retrying cannot help: the job is recorded as FAILED, with the reason, for the platform to see.
        return Job(
            status=JobStatus.FAILED, failure_reason=f"Dropped file rejected: {reason}", finished_at=utc_now(), **common
        )
    return Job(
        **common,
        details=batch_details(
            model_name=model_name,
            content_type=content_type,
            accept=entry.backend.accept,
            split_type="Line",
            instance_type=settings.batch_default_instance_type,
            instance_count=1,
            join_with_input=False,
            max_payload_mb=6,
            source="s3-drop",
        ),
    )

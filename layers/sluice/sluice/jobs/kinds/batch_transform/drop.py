"""The S3 drop: a file created under batch-input/<model>/ in the data bucket starts one batch job.

S3 notifications reach the function through an SQS queue, at least once and in any order. Each job
id is derived from the object's bucket, key and version (or, unversioned, its sequencer), so a
duplicate delivery finds its job already created (JobStore.create is a conditional write) and only
makes sure the execution was started; the execution is named after the job, so it starts once.

Dropped jobs belong to settings.batch_drop_caller (default "platform"): write access to the
batch-input/ prefix is the authorisation, so the caller's catalog rules are not consulted.

A job scores exactly the dropped object and version. SageMaker reads an S3Prefix as a prefix
(`rows.csv` would also score `rows.csv.bak`) and always reads an object's latest version, and its
manifests cannot name a version. So before the job starts, the dropped version is copied
(CopyObject with its VersionId; unversioned: only if its ETag still matches) to the job's own
batch-pinned/<caller>/<job>/input/ folder, and a manifest naming that one copy is what the transform
job reads. Pinning again on a retried delivery copies the same version to the same key: harmless.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any
from urllib.parse import unquote_plus

from botocore.exceptions import ClientError
from pydantic import BaseModel

from sluice import clients
from sluice.errors import InvalidRequest
from sluice.jobs import services
from sluice.jobs.kinds.batch_transform.start import start_batch
from sluice.jobs.kinds.batch_transform.submit import batch_details, batch_model_name
from sluice.jobs.models import Job, JobKind, JobStatus, utc_now
from sluice.jobs.store import JobExists
from sluice.providers.errors import from_client_error
from sluice.request.access import current_catalog
from sluice.settings import get_settings
from sluice.storage.keys import (
    batch_drop_model,
    batch_drop_name,
    batch_output_prefix,
    parse_s3_uri,
    pinned_input_prefix,
    pinned_manifest_key,
    s3_uri,
)
from sluice.telemetry import logger

# File extension -> content type; any other extension is sent as the first of settings.batch_content_types.
CONTENT_TYPES = {".csv": "text/csv", ".jsonl": "application/jsonlines", ".jsonlines": "application/jsonlines"}
# CopyObject's own limit (5 GiB): a larger drop cannot be pinned in one request.
MAX_PINNED_BYTES = 5 * 1024**3
# The source version is gone or changed, or S3 refuses the copy for good: retrying cannot help.
_PIN_REFUSED = frozenset({"NoSuchKey", "NoSuchVersion", "PreconditionFailed", "412", "InvalidRequest", "404"})


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
    source = DroppedObject(
        bucket=bucket, key=key, version_id=obj.get("versionId") or None, etag=obj.get("eTag"), size=obj.get("size")
    )
    job = _drop_job(source, model, drop_job_id(bucket, key, version))
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
    # (A job recorded before drops were pinned has no pinned_input: it starts as it was recorded.)
    if job.status == JobStatus.QUEUED and "pinned_input" in job.details:
        refused = pin_dropped_object(job, source)
        if refused is not None:
            job = store.transition(job.job_id, JobStatus.FAILED, failure_reason=refused) or job
    if job.status == JobStatus.FAILED:
        logger.error("dropped file rejected", extra={"job_id": job.job_id, "key": key, "reason": job.failure_reason})
        return DropOutcome(key=key, job_id=job.job_id, outcome="rejected")
    # A start that fails raises: the message returns to the queue and, after the queue's
    # maxReceiveCount, is parked in the dead-letter queue.
    arn = start_batch(job, fail_job_on_error=False)
    logger.info("batch drop started", extra={"job_id": job.job_id, "key": key, "execution": arn})
    return DropOutcome(key=key, job_id=job.job_id, outcome="started")


class DroppedObject(BaseModel):
    """The object version an S3 notification announced."""

    bucket: str
    key: str
    version_id: str | None = None  # absent when the bucket is not versioned
    etag: str | None = None
    size: int | None = None


def pin_dropped_object(job: Job, source: DroppedObject) -> str | None:
    """Copy the dropped version to the job's pinned key and write the manifest naming it.

    Returns None when pinned, or the job's failure reason when the version cannot be pinned for good.
    Raises on errors that may clear up (throttling, S3 unavailable, access denied), so SQS retries."""
    if source.size is not None and source.size > MAX_PINNED_BYTES:
        return (
            f"Dropped file rejected: {source.key} is {source.size} bytes; a dropped file may be at most "
            f"{MAX_PINNED_BYTES} bytes (5 GiB). Split it into several files."
        )
    pinned_bucket, pinned_key = parse_s3_uri(job.details["pinned_input"])
    manifest_bucket, manifest_key = parse_s3_uri(job.details["input_manifest"])
    copy_source: dict[str, str] = {"Bucket": source.bucket, "Key": source.key}
    conditions: dict[str, str] = {}
    if source.version_id:
        copy_source["VersionId"] = source.version_id
    elif source.etag:
        # Unversioned: the copy happens only if the object is still the one that was dropped.
        etag = source.etag.strip('"')
        conditions["CopySourceIfMatch"] = f'"{etag}"'
    s3 = clients.get("s3")
    try:
        s3.copy_object(Bucket=pinned_bucket, Key=pinned_key, CopySource=copy_source, **conditions)
    except ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _PIN_REFUSED:
            what = f"version {source.version_id}" if source.version_id else "the dropped content"
            return (
                f"Dropped file rejected: {what} of {source.key} could not be pinned for scoring ({code}): it was "
                "deleted or overwritten before its job started. Drop the file again."
            )
        raise from_client_error("s3", exc) from exc
    # SageMaker names the output after the manifest entry: <output>/<name>.out, as for the dropped file.
    name = batch_drop_name(source.key)
    manifest = [{"prefix": s3_uri(pinned_bucket, pinned_key.removesuffix(name))}, name]
    try:
        s3.put_object(
            Bucket=manifest_bucket, Key=manifest_key, Body=json.dumps(manifest).encode(), ContentType="application/json"
        )
    except ClientError as exc:
        raise from_client_error("s3", exc) from exc
    logger.info(
        "dropped version pinned",
        extra={"job_id": job.job_id, "key": source.key, "version_id": source.version_id, "pinned": pinned_key},
    )
    return None


def _drop_job(source: DroppedObject, model: str, job_id: str) -> Job:
    bucket, key = source.bucket, source.key
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
            input_version_id=source.version_id,
            pinned_input=s3_uri(bucket, pinned_input_prefix(caller, job_id) + batch_drop_name(key)),
            input_manifest=s3_uri(bucket, pinned_manifest_key(caller, job_id)),
        ),
    )

"""POST /v1/batch-jobs: validate a batch transform request, create the job, start the state machine.

Where a batch job may read and write: in the stack's data bucket, only the caller's own prefixes
(uploads/<caller>/, async/<caller>/ and batch-output/<caller>/ to read; batch-output/<caller>/ to
write), so no caller can score, or copy out, another caller's data. Buckets listed in
settings.batch_extra_buckets (stack parameter BatchExtraBuckets) are open to every caller. The state
machine checks the input again and decides again whether the instance needs an operator's approval;
the checks here only answer sooner and more clearly. A job that needs an approval is created
AWAITING_APPROVAL and its workflow waits for an operator (sluice.approvals).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from sluice import clients
from sluice.catalog.models import ModelEntry, SageMakerBackend
from sluice.errors import InvalidRequest, LocationNotAllowed
from sluice.jobs import idempotency, services
from sluice.jobs.callback_topics import check_callback_topic
from sluice.jobs.kinds.batch_transform.models import BatchJobRequest
from sluice.jobs.kinds.batch_transform.policy import needs_approval
from sluice.jobs.kinds.batch_transform.start import start_batch
from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.jobs.workflow_start import create_once, new_job_id
from sluice.providers.errors import from_client_error
from sluice.request.access import resolve_model
from sluice.request.context import RequestContext
from sluice.request.validation import validation_failed
from sluice.settings import get_settings
from sluice.storage.keys import (
    ASYNC_PREFIX,
    BATCH_OUTPUT_PREFIX,
    UPLOADS_PREFIX,
    batch_output_prefix,
    caller_prefix,
    parse_s3_uri,
    s3_uri,
)

_READABLE = (UPLOADS_PREFIX, ASYNC_PREFIX, BATCH_OUTPUT_PREFIX)
_WRITABLE = (BATCH_OUTPUT_PREFIX,)


def submit_batch(
    ctx: RequestContext, request: BatchJobRequest, *, idempotency_key: str | None, lambda_context: Any = None
) -> tuple[Job, bool]:
    idempotency.check_key(idempotency_key)
    settings = get_settings()
    caller = ctx.caller.identity
    entry = resolve_model(ctx, request.model, asynchronous=True)
    model_name = batch_model_name(request.model, entry)
    content_type = request.content_type or settings.batch_content_types[0]
    if content_type not in settings.batch_content_types:
        raise validation_failed(
            [
                {
                    "field": "body.content_type",
                    "message": f"'{content_type}' is not supported for batch; use one of "
                    f"{', '.join(settings.batch_content_types)}",
                }
            ]
        )
    if request.instance_count > settings.batch_max_instance_count:
        raise validation_failed(
            [
                {
                    "field": "body.instance_count",
                    "message": f"at most {settings.batch_max_instance_count} instances per batch job",
                }
            ]
        )
    instance_type = request.instance_type or settings.batch_default_instance_type
    input_bucket, input_prefix = parse_s3_uri(request.input_prefix)
    check_location(caller, input_bucket, input_prefix, "input_prefix", _READABLE)
    check_callback_topic(
        caller, request.callback.sns_topic_arn if request.callback else None, "body.callback.sns_topic_arn"
    )
    if request.output_prefix:
        output_bucket, output_prefix = parse_s3_uri(request.output_prefix)
        check_location(caller, output_bucket, output_prefix, "output_prefix", _WRITABLE)
    check_input_exists(input_bucket, input_prefix)

    route = "POST /v1/batch-jobs"

    def create() -> str:
        job_id = new_job_id(caller=caller, route=route, key=idempotency_key)
        output = request.output_prefix or s3_uri(settings.data_bucket, batch_output_prefix(caller, job_id))
        job = Job(
            job_id=job_id,
            caller=caller,
            kind=JobKind.BATCH,
            model=request.model,
            input_location=request.input_prefix,
            output_location=output,
            callback=request.callback,
            status=initial_status(instance_type),
            details=batch_details(
                model_name=model_name,
                content_type=content_type,
                # What the model answers: a JSON-only model must not be asked for CSV.
                accept=entry.backend.accept,
                split_type=request.split_type,
                instance_type=instance_type,
                instance_count=request.instance_count,
                join_with_input=request.join_with_input,
                max_payload_mb=request.max_payload_mb,
            ),
        )
        job = create_once(job)
        start_batch(job)
        return job_id

    job_id, replayed = idempotency.once(
        key=idempotency_key,
        caller=caller,
        route=route,
        payload=request.model_dump(mode="json", exclude_none=True),
        create=create,
        lambda_context=lambda_context,
    )
    job = services.store().get(job_id)
    assert job is not None, job_id
    return job, replayed


def batch_details(**facts: Any) -> dict[str, Any]:
    """The batch facts on the job row: everything the state machine's input is built from."""
    return {key: value for key, value in facts.items() if value is not None}


def batch_model_name(name: str, entry: ModelEntry) -> str:
    backend = entry.backend
    if not isinstance(backend, SageMakerBackend):
        raise InvalidRequest(
            f"Model '{name}' is served by {backend.provider}; batch transform runs SageMaker models only.",
            param="model",
        )
    if not backend.model_name:
        raise InvalidRequest(
            f"Model '{name}' has no SageMaker model for batch transform (its catalog entry sets no "
            "backend.model_name). Ask the platform team to add it.",
            param="model",
        )
    return backend.model_name


def initial_status(instance_type: str) -> JobStatus:
    """The state machine's own rule (kinds.batch_transform.policy): a job that will wait for an operator says so."""
    if needs_approval(instance_type, get_settings().batch_unapproved_instance_types):
        return JobStatus.AWAITING_APPROVAL
    return JobStatus.QUEUED


def check_location(caller: str, bucket: str, prefix: str, field: str, own_prefixes: tuple[str, ...]) -> None:
    settings = get_settings()
    if bucket in settings.batch_extra_buckets:
        return
    mine = [caller_prefix(top, caller) for top in own_prefixes]
    if bucket == settings.data_bucket and any(prefix.startswith(own) and len(prefix) > len(own) for own in mine):
        return
    if bucket == settings.data_bucket:
        where = " or ".join(s3_uri(bucket, own) for own in mine)
        message = f"{field} must be under {where}: your own prefixes of the data bucket."
    else:
        message = (
            f"{field} is in bucket '{bucket}', which batch jobs may not use. Use the data bucket "
            f"({settings.data_bucket}), or ask the platform team to add the bucket to BatchExtraBuckets."
        )
    raise LocationNotAllowed(message, param=field)


def check_input_exists(bucket: str, prefix: str) -> None:
    try:
        page = clients.get("s3").list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=100)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "NoSuchBucket":
            raise validation_failed(
                [{"field": "body.input_prefix", "message": f"bucket '{bucket}' does not exist"}]
            ) from None
        raise from_client_error("s3", exc) from exc
    # Zero-byte "folder" markers are not input.
    if not any(item.get("Size", 0) > 0 for item in page.get("Contents", [])):
        raise validation_failed(
            [
                {
                    "field": "body.input_prefix",
                    "message": f"input prefix is empty: no objects under {s3_uri(bucket, prefix)}",
                }
            ]
        )

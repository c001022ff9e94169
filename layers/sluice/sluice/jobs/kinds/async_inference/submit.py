"""POST /v1/models/{model}/async and its upload step: the input is in S3 before the job exists.

Inline bodies (up to settings.async_max_inline_bytes) are written to async/<caller>/<job>/input.
Larger inputs (up to settings.async_max_upload_bytes) take two steps: POST .../async/uploads returns
a presigned PUT for uploads/<caller>/<upload id>, then POST .../async with the header
X-Sluice-Input-Upload names it. The upload key holds the caller, so another caller's upload id
resolves to nothing (404), never to their data.

A ticket is never larger than the model's runner accepts (a SageMaker async endpoint takes
async_max_upload_bytes; the async workflow calls the model synchronously, within its payload limit),
and a caller holds at most async_max_open_uploads open tickets (sluice.jobs.kinds.async_inference.upload_tickets).
"""

from __future__ import annotations

import hashlib
import math
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from sluice import clients
from sluice.catalog.models import BedrockBackend, ModelEntry, SageMakerBackend
from sluice.errors import InvalidRequest, PayloadTooLarge, TooManyOpenUploads, UploadNotFound
from sluice.jobs import idempotency, services
from sluice.jobs.callback_topics import check_callback_topic
from sluice.jobs.kinds.async_inference.models import UPLOAD_ID_PATTERN, UploadRequest, UploadTicket
from sluice.jobs.kinds.async_inference.start import runner_of, start_async, uses_native_async
from sluice.jobs.kinds.async_inference.upload_tickets import upload_tickets
from sluice.jobs.models import Callback, Job, JobKind
from sluice.jobs.workflow_start import create_once, new_job_id
from sluice.providers.errors import from_client_error, translate_errors
from sluice.request.access import resolve_model
from sluice.request.body import check_json_body, choose_content_type
from sluice.request.context import RequestContext
from sluice.request.validation import validation_failed
from sluice.settings import get_settings
from sluice.storage.keys import async_input_key, s3_uri, upload_key
from sluice.telemetry import logger

UPLOAD_HEADER = "X-Sluice-Input-Upload"
CALLBACK_SNS_HEADER = "X-Sluice-Callback-Sns"
CALLBACK_URL_HEADER = "X-Sluice-Callback-Url"
# The same callback may come in the query string (for clients that cannot set headers).
CALLBACK_SNS_QUERY = "callback_sns"
CALLBACK_URL_QUERY = "callback_url"
_UPLOAD_ID = re.compile(UPLOAD_ID_PATTERN)


def upload_limit(entry: ModelEntry) -> int:
    """The largest input this model's async runner accepts."""
    settings = get_settings()
    if uses_native_async(entry):
        return settings.async_max_upload_bytes
    # The async workflow invokes the model synchronously: a larger input would be accepted, then fail.
    payload_limit = entry.limits.max_payload_bytes or settings.default_max_payload_bytes
    return min(settings.async_max_upload_bytes, payload_limit)


def _check_upload_size(name: str, entry: ModelEntry, size: int, param: str) -> None:
    limit = upload_limit(entry)
    if size <= limit:
        return
    if uses_native_async(entry) or limit == get_settings().async_max_upload_bytes:
        why = "an async input may be at most"
    else:
        why = f"model '{name}' runs on the async workflow, which calls it synchronously; it accepts at most"
    raise PayloadTooLarge(
        f"{param} is {size} bytes; {why} {limit} bytes. Split the input, or score it with a batch job "
        "(POST /v1/batch-jobs).",
        param=param,
        details={"size_bytes": size, "limit_bytes": limit},
    )


def create_upload(ctx: RequestContext, name: str, request: UploadRequest) -> UploadTicket:
    entry = resolve_model(ctx, name, asynchronous=True)
    settings = get_settings()
    caller = ctx.caller.identity
    _check_upload_size(name, entry, request.size_bytes, "body.size_bytes")
    tickets = upload_tickets()
    now = time.time()
    with translate_errors("dynamodb"):
        held = tickets.open_for(caller, now=now)
    if held.count >= settings.async_max_open_uploads:
        wait = max(1, math.ceil((held.first_expiry or now) - now))
        raise TooManyOpenUploads(
            f"You hold {held.count} open upload tickets; at most {settings.async_max_open_uploads} may be open "
            f"at once. Use them (PUT the file, then POST /v1/models/<model>/async with {UPLOAD_HEADER}) or wait "
            f"until one expires, in {wait} s.",
            details={"open_uploads": held.count, "limit": settings.async_max_open_uploads},
            headers={"Retry-After": str(wait)},
        )
    upload_id = f"up-{secrets.token_hex(16)}"
    key = upload_key(caller, upload_id)
    url = clients.get("s3").generate_presigned_url(
        "put_object",
        Params={"Bucket": settings.data_bucket, "Key": key, "ContentLength": request.size_bytes},
        ExpiresIn=settings.presigned_url_seconds,
    )
    expires_at = int(now) + settings.presigned_url_seconds
    with translate_errors("dynamodb"):
        tickets.record(caller, upload_id, model=name, size_bytes=request.size_bytes, expires_at=expires_at)
    expires = datetime.fromtimestamp(expires_at, UTC)
    return UploadTicket(
        upload_id=upload_id,
        model=name,
        url=url,
        headers={"Content-Length": str(request.size_bytes)},
        size_bytes=request.size_bytes,
        expires_at=expires.isoformat(timespec="seconds"),
        s3_uri=s3_uri(settings.data_bucket, key),
        next=f"PUT the file to url, then POST /v1/models/{name}/async with header {UPLOAD_HEADER}: {upload_id}",
    )


def callback_from(headers: Any, query: dict[str, str]) -> Callback | None:
    """X-Sluice-Callback-Sns / X-Sluice-Callback-Url headers, or ?callback_sns= / ?callback_url=."""
    fields = {
        "sns_topic_arn": (headers.get(CALLBACK_SNS_HEADER) or query.get(CALLBACK_SNS_QUERY), CALLBACK_SNS_HEADER),
        "webhook_url": (headers.get(CALLBACK_URL_HEADER) or query.get(CALLBACK_URL_QUERY), CALLBACK_URL_HEADER),
    }
    given = {field: value for field, (value, _) in fields.items() if value}
    if not given:
        return None
    from pydantic import ValidationError

    try:
        return Callback(**given)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err.get("loc") else "callback"
            header = fields.get(field, (None, field))[1]
            what = "an SNS topic ARN" if field == "sns_topic_arn" else "an https:// URL"
            problems.append({"field": header, "message": f"must be {what} ({err.get('msg', 'invalid')})"})
        raise validation_failed(problems) from None


def submit_async(
    ctx: RequestContext,
    name: str,
    *,
    body: bytes,
    content_type: str | None,
    upload_id: str | None,
    callback: Callback | None,
    idempotency_key: str | None,
    lambda_context: Any = None,
) -> tuple[Job, bool]:
    """Returns the job (as stored) and whether the request replayed an earlier one (Idempotency-Key)."""
    idempotency.check_key(idempotency_key)
    entry = resolve_model(ctx, name, asynchronous=True)
    settings = get_settings()
    caller = ctx.caller.identity
    chosen_type = _content_type(entry, content_type)
    check_callback_topic(caller, callback.sns_topic_arn if callback else None, CALLBACK_SNS_HEADER)
    # SageMaker's notification for a native async job must name this endpoint (async_notifications).
    backend = entry.backend
    native_endpoint = (
        {"endpoint_name": backend.endpoint_name}
        if uses_native_async(entry) and isinstance(backend, SageMakerBackend)
        else {}
    )
    payload: dict[str, Any] = {"model": name, "content_type": chosen_type}
    if callback is not None:
        payload["callback"] = callback.model_dump(exclude_none=True)
    if upload_id is not None:
        if body:
            raise InvalidRequest(
                f"Send the input either in the body or as an upload ({UPLOAD_HEADER}), not both.", param=UPLOAD_HEADER
            )
        input_key, input_bytes = _uploaded_input(caller, name, entry, upload_id)
        payload["upload_id"] = upload_id
    else:
        _check_inline(name, body)
        check_json_body(body, chosen_type)
        input_key, input_bytes = None, len(body)
        payload["body_sha256"] = hashlib.sha256(body).hexdigest()

    route = f"POST /v1/models/{name}/async"

    def create() -> str:
        job_id = new_job_id(caller=caller, route=route, key=idempotency_key)
        key = input_key or async_input_key(caller, job_id)
        if input_key is None:
            # Written before the job exists and before anything may read it (SSE-KMS: the bucket's default).
            with translate_errors("s3"):
                clients.get("s3").put_object(Bucket=settings.data_bucket, Key=key, Body=body, ContentType=chosen_type)
        job = Job(
            job_id=job_id,
            caller=caller,
            kind=JobKind.ASYNC,
            model=name,
            input_location=s3_uri(settings.data_bucket, key),
            callback=callback,
            details={
                "content_type": chosen_type,
                "input_bytes": input_bytes,
                "runner": runner_of(entry),
                **native_endpoint,
            },
        )
        job = create_once(job)
        start_async(job, entry)
        return job_id

    job_id, replayed = idempotency.once(
        key=idempotency_key,
        caller=caller,
        route=route,
        payload=payload,
        create=create,
        lambda_context=lambda_context,
    )
    job = services.store().get(job_id)
    assert job is not None, job_id
    if upload_id is not None:
        _consume_ticket(caller, upload_id)
    return job, replayed


def _consume_ticket(caller: str, upload_id: str) -> None:
    """The job exists: a failure here only leaves the ticket counted until it expires."""
    try:
        upload_tickets().consume(caller, upload_id)
    except ClientError as exc:
        logger.warning("upload ticket not released", extra={"upload_id": upload_id, "error": str(exc)})


def _content_type(entry: ModelEntry, requested: str | None) -> str:
    backend = entry.backend
    if isinstance(backend, BedrockBackend):
        return choose_content_type(requested, ("application/json",))
    return choose_content_type(requested, (backend.content_type, *backend.extra_content_types))


def _check_inline(name: str, body: bytes) -> None:
    limit = get_settings().async_max_inline_bytes
    if not body:
        raise InvalidRequest(
            f"The request body is empty. Send the input as the body, or upload it first "
            f"(POST /v1/models/{name}/async/uploads) and name it in {UPLOAD_HEADER}.",
            param="body",
        )
    if len(body) > limit:
        raise PayloadTooLarge(
            f"The body is {len(body)} bytes; inline async inputs may be at most {limit} bytes. Upload larger "
            f"inputs first: POST /v1/models/{name}/async/uploads returns a URL to PUT the file to, then "
            f"POST /v1/models/{name}/async with header {UPLOAD_HEADER}: <upload_id> and no body.",
            param="body",
            details={"size_bytes": len(body), "limit_bytes": limit},
        )


def _uploaded_input(caller: str, name: str, entry: ModelEntry, upload_id: str) -> tuple[str, int]:
    """The caller's uploaded object: its key and size."""
    if not _UPLOAD_ID.match(upload_id):
        raise validation_failed(
            [{"field": UPLOAD_HEADER, "message": "not an upload id (up-<32 hex>) from POST .../async/uploads"}]
        )
    settings = get_settings()
    key = upload_key(caller, upload_id)
    try:
        head = clients.get("s3").head_object(Bucket=settings.data_bucket, Key=key)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            raise UploadNotFound(
                f"Upload '{upload_id}' holds no file: it was never uploaded (PUT the file to the upload's url "
                f"first), it expired, or it is not yours. Create one with POST /v1/models/{name}/async/uploads.",
                param=UPLOAD_HEADER,
            ) from None
        raise from_client_error("s3", exc) from exc
    size = int(head.get("ContentLength", 0))
    _check_upload_size(name, entry, size, UPLOAD_HEADER)
    if size == 0:
        raise validation_failed([{"field": UPLOAD_HEADER, "message": f"upload '{upload_id}' is empty"}])
    return key, size

"""Async inference for backends without native async (Bedrock, real-time SageMaker endpoints).

The input object is read from S3, the model is called through the synchronous path's domain code
(sluice.inference.invoke: catalog, caller rules, limits, error translation, metrics), and the model's
answer is written next to the input. Errors keep their Sluice class, so the state machine's Retry
tells transient ones (TRANSIENT_ERRORS) from the rest by name.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from sluice.auth.caller import Caller
from sluice.errors import BackendMisconfigured, BackendUnavailable, InvalidRequest, PayloadTooLarge, Throttled
from sluice.inference.invoke import InvokeResponse, invoke
from sluice.jobs.kinds.async_inference.models import AsyncExecutionInput
from sluice.request.access import resolve_model
from sluice.request.context import RequestContext
from sluice.settings import get_settings
from sluice.storage.keys import s3_uri

# errorType names the async state machine retries (statemachines/async_inference.asl.json): backend
# throttling, backend 5xx and backend timeouts. Every other error fails the job at once.
TRANSIENT_ERRORS = ("Throttled", "BackendUnavailable", "BackendTimeout")

_S3_THROTTLES = {"SlowDown", "ThrottlingException", "RequestLimitExceeded"}


class AsyncOutcome(BaseModel):
    output_location: str
    # Recorded on the job: what the call cost and where it ran.
    details: dict[str, Any]


def run_async_inference(s3: Any, job: AsyncExecutionInput, request_id: str) -> AsyncOutcome:
    ctx = RequestContext(request_id=request_id, caller=Caller(identity=job.caller, auth="job"))
    body = _read_input(ctx, s3, job)
    response = invoke(ctx, job.model, body, job.content_type)
    payload = output_bytes(response)
    with _s3_errors(f"write the output to s3://{job.output_bucket}/{job.output_key}"):
        s3.put_object(Bucket=job.output_bucket, Key=job.output_key, Body=payload, ContentType=response.content_type)
    return AsyncOutcome(
        output_location=s3_uri(job.output_bucket, job.output_key),
        details={
            "provider": response.provider,
            "variant": response.variant,
            "content_type": response.content_type,
            "output_bytes": len(payload),
            "usage": response.usage.model_dump(exclude_none=True),
            "latency_ms": response.latency_ms,
            "backend_latency_ms": response.backend_latency_ms,
            "estimated_cost_usd": response.estimated_cost_usd,
        },
    )


def output_bytes(response: InvokeResponse) -> bytes:
    """The model's answer as it came from the backend (the sync API decoded it for a JSON response)."""
    if response.output_encoding == "json":
        return json.dumps(response.output).encode()
    if response.output_encoding == "text":
        return str(response.output).encode()
    return base64.b64decode(response.output)


def _read_input(ctx: RequestContext, s3: Any, job: AsyncExecutionInput) -> bytes:
    location = s3_uri(job.input_bucket, job.input_key)
    # Resolving first fails a job for a model it may not use before anything is read.
    entry = resolve_model(ctx, job.model)
    limit = entry.limits.max_payload_bytes or get_settings().default_max_payload_bytes
    with _s3_errors(f"read the input {location}"):
        obj = s3.get_object(Bucket=job.input_bucket, Key=job.input_key)
        size = int(obj.get("ContentLength") or 0)
        if size > limit:
            obj["Body"].close()
            raise PayloadTooLarge(
                f"The input is {size} bytes; model '{job.model}' is called synchronously by async jobs and "
                f"accepts at most {limit} bytes per call. Split the input, or use a model on a SageMaker "
                "async endpoint for large inputs.",
                details={"size_bytes": size, "limit_bytes": limit},
            )
        return obj["Body"].read()


@contextmanager
def _s3_errors(action: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("NoSuchKey", "404", "NotFound"):
            raise InvalidRequest(f"Could not {action}: it does not exist (deleted, or expired).") from exc
        if code in _S3_THROTTLES:
            raise Throttled(f"Could not {action}: S3 is throttling ({code}).") from exc
        if status >= 500:
            raise BackendUnavailable(f"Could not {action}: S3 answered {status} ({code}).") from exc
        raise BackendMisconfigured(f"Could not {action}: S3 refused ({code}); check the function's IAM.") from exc

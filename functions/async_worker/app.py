"""Workflow step "Run inference" of statemachines/async_inference: input object -> model -> output object.

Input: sluice.jobs.models.AsyncExecutionInput (the execution's input). Output: {output_location,
details}. Transient backend errors are raised as Throttled / BackendUnavailable / BackendTimeout
(the state machine retries those); any other error fails the job.
"""

from __future__ import annotations

from typing import Any

from sluice import clients
from sluice.jobs.kinds.async_inference.models import AsyncExecutionInput
from sluice.jobs.kinds.async_inference.runner import run_async_inference
from sluice.telemetry import logger, metrics, tracer

s3 = clients.get("s3")


@logger.inject_lambda_context
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    job = AsyncExecutionInput.model_validate(event)
    logger.append_keys(job_id=job.job_id, model=job.model, caller=job.caller)
    outcome = run_async_inference(s3, job, context.aws_request_id)
    logger.info("async inference done", extra={"output_location": outcome.output_location})
    return outcome.model_dump(mode="json")

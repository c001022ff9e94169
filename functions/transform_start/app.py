"""Workflow step "Start transform job" of statemachines/batch_transform: records the transform job's
name on the job (only while it is RUNNING), creates it, and stops it if the job was cancelled meanwhile
(sluice.jobs.kinds.batch_transform.transform_start).

Input: {"job_id", "model", "attempt", "transform": TransformPlan}. Output: TransformStarted
{transform_job_name, started, arn, stopped}; `started` false means the job was cancelled first.
"""

from __future__ import annotations

from typing import Any

from sluice import clients
from sluice.jobs import services
from sluice.jobs.kinds.batch_transform.transform_start import TransformStart, start_transform
from sluice.telemetry import logger, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    request = TransformStart.model_validate(event)
    logger.append_keys(job_id=request.job_id)
    started = start_transform(services.store(), clients.get("sagemaker"), request)
    logger.info("transform job start", extra=started.model_dump())
    return started.model_dump(mode="json")

"""Workflow step "Plan deployment" of statemachines/deployment: the endpoint's baseline and the approval decision.

Input: {"job": <DeploymentExecutionInput>}. Output: DeploymentPlan {needs_approval, reason, instance_type,
instance_count, timeout_seconds, step_count, record} (sluice.jobs.kinds.deployment.plan).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sluice import clients
from sluice.jobs.kinds.deployment.models import DeploymentExecutionInput
from sluice.jobs.kinds.deployment.plan import plan_deployment
from sluice.settings import get_settings
from sluice.telemetry import logger, tracer


class PlanRequest(BaseModel):
    job: DeploymentExecutionInput


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    request = PlanRequest.model_validate(event)
    logger.append_keys(job_id=request.job.job_id)
    plan = plan_deployment(clients.get("sagemaker"), request.job, get_settings())
    logger.info("deployment planned", extra={"caller": request.job.caller, **plan.model_dump(mode="json")})
    return plan.model_dump(mode="json")

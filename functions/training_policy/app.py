"""Workflow step "Plan first attempt" of statemachines/training: the approval decision and attempt 1's plan.

Input: {"job": <TrainingExecutionInput>}. Output: FirstAttempt {needs_approval, reason, instance_type,
instance_count, timeout_seconds, record, plan}. A pure decision, logged; whether the instance type needs
an operator's approval is decided from the stack's settings (sluice.jobs.kinds.training.policy).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sluice.jobs.kinds.training.models import TrainingExecutionInput
from sluice.jobs.kinds.training.policy import plan_first_attempt
from sluice.settings import get_settings
from sluice.telemetry import logger, tracer


class FirstAttemptRequest(BaseModel):
    job: TrainingExecutionInput


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    request = FirstAttemptRequest.model_validate(event)
    logger.append_keys(job_id=request.job.job_id)
    first = plan_first_attempt(request.job, get_settings())
    logger.info("first training attempt planned", extra={"caller": request.job.caller, **first.model_dump(mode="json")})
    return first.model_dump(mode="json")

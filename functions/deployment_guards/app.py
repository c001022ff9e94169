"""Workflow step "Read guards" of statemachines/deployment: one guard reading of the bake.

Input: GuardRead {job, bake, interval_seconds, max_extensions}. Output: GuardReading {next, verdict, reason,
bake, observed} (sluice.jobs.kinds.deployment.guards); the reading goes to the job's details.steps[].
"""

from __future__ import annotations

from typing import Any

from sluice import clients
from sluice.jobs import services
from sluice.jobs.kinds.deployment.guards import GuardRead, read_guards
from sluice.settings import get_settings
from sluice.telemetry import logger, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    request = GuardRead.model_validate(event)
    logger.append_keys(job_id=request.job.job_id)
    reading = read_guards(services.store(), clients.get("cloudwatch"), request, get_settings())
    logger.info("guards read", extra=reading.model_dump(mode="json"))
    return reading.model_dump(mode="json")

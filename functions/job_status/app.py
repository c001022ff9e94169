"""Workflow step "Mark job running/succeeded/failed/cancelled" (and notes): the one writer of job state.

Input: sluice.jobs.status.StatusUpdate. Output: {job_id, status, changed, applied}; `applied` false
means the job was cancelled or finished meanwhile, and the workflow stops without announcing it.
"""

from __future__ import annotations

from typing import Any

from sluice.jobs import services
from sluice.jobs.status import StatusUpdate, record_status
from sluice.telemetry import logger, tracer

store = services.store()


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    update = StatusUpdate.model_validate(event)
    logger.append_keys(job_id=update.job_id)
    result = record_status(store, update)
    logger.info(
        "job status recorded",
        extra={"requested": update.status, "status": result.status, "changed": result.changed},
    )
    return result.model_dump(mode="json")

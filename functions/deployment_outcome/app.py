"""Workflow steps "Record outcome" and "Release endpoint" of statemachines/deployment.

Input: {"action": "finish", ...Finish} -> Finished {status, error} (sluice.jobs.kinds.deployment.outcome);
{"action": "release", "job_id", "endpoint_name"} -> {released} (sluice.jobs.kinds.deployment.lock).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from sluice import clients
from sluice.jobs import services
from sluice.jobs.kinds.deployment.lock import EndpointLocks
from sluice.jobs.kinds.deployment.outcome import Finish, finish
from sluice.settings import get_settings
from sluice.telemetry import logger, tracer


class FinishRequest(Finish):
    action: Literal["finish"]


class ReleaseRequest(BaseModel):
    action: Literal["release"]
    job_id: str
    endpoint_name: str


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    if event.get("action") == "release":
        release = ReleaseRequest.model_validate(event)
        logger.append_keys(job_id=release.job_id)
        locks = EndpointLocks(clients.get("dynamodb"), get_settings().deployment_locks_table)
        released = locks.release(release.endpoint_name, release.job_id)
        logger.info("endpoint released", extra={"endpoint_name": release.endpoint_name, "released": released})
        return {"released": released}
    request = FinishRequest.model_validate(event)
    logger.append_keys(job_id=request.job.job_id)
    finished = finish(services.store(), request)
    logger.info("deployment finished", extra={"result": request.result, **finished.model_dump(mode="json")})
    return finished.model_dump(mode="json")

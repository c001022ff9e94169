"""Workflow step "Register model version" of statemachines/training: the trained model as a version of
its model package group, Approved when its metric passes the threshold, else Rejected with the reason
(sluice.registry.registration).

Input: sluice.registry.models.RegistrationRequest. Output: ModelPackageRef {arn, group, version,
approval_status, reason} (the job's details.model_package).
"""

from __future__ import annotations

from typing import Any

from sluice import clients
from sluice.registry.models import RegistrationRequest
from sluice.registry.registration import register_version
from sluice.telemetry import logger, tracer


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    request = RegistrationRequest.model_validate(event)
    logger.append_keys(job_id=request.job_id)
    registered = register_version(clients.get("sagemaker"), clients.get("s3"), request)
    logger.info(
        "model version registered",
        extra={"training_job_name": request.training_job_name, **registered.model_dump(mode="json")},
    )
    return registered.model_dump(mode="json")

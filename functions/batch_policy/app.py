"""Workflow decisions of statemachines/batch_transform: "Check instance approval" and "Classify failure".

Input: {"decision": "instance_approval", "job": <BatchExecutionInput>} or
{"decision": "transform_failure", "job": <BatchExecutionInput>, "transform_job_name", "failure_reason"}.
Pure decisions, logged; the state machine's Choice states act on them. Whether an instance needs an
approval is decided here from the stack's settings; the approval itself comes from an operator.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from sluice.jobs.kinds.batch_transform.models import BatchExecutionInput
from sluice.jobs.kinds.batch_transform.policy import classify_transform_failure, instance_approval, transform_plan
from sluice.settings import approval_timeout_seconds, get_settings
from sluice.telemetry import logger, tracer


class InstanceApproval(BaseModel):
    decision: Literal["instance_approval"]
    job: BatchExecutionInput


class TransformFailure(BaseModel):
    decision: Literal["transform_failure"]
    job: BatchExecutionInput
    transform_job_name: str
    failure_reason: str | None = None  # SageMaker's FailureReason


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    if event.get("decision") == "instance_approval":
        request = InstanceApproval.model_validate(event)
        job = request.job
        logger.append_keys(job_id=job.job_id)
        settings = get_settings()
        decision = instance_approval(job.instance_type, job.instance_count, settings.batch_unapproved_instance_types)
        logger.info("instance approval checked", extra={"caller": job.caller, **decision.model_dump()})
        return {
            **decision.model_dump(mode="json"),
            # How long "Wait for an operator's approval" waits (ApprovalTimeoutHours, in seconds).
            "timeout_seconds": approval_timeout_seconds(settings),
            # Recorded on the job when it starts running.
            "record": {"instance_type": decision.instance_type, "instance_count": decision.instance_count},
            "transform": transform_plan(job).model_dump(mode="json"),
        }
    failure = TransformFailure.model_validate(event)
    logger.append_keys(job_id=failure.job.job_id)
    classification = classify_transform_failure(failure.failure_reason, failure.job.instance_type)
    logger.info(
        "transform job failure classified",
        extra={"transform_job_name": failure.transform_job_name, **classification.model_dump()},
    )
    return classification.model_dump(mode="json")

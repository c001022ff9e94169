"""Workflow steps of statemachines/deployment that change or check the endpoint (each change audited).

Input: {"action": ..., "job": <DeploymentExecutionInput>, ...}:
- "add": "Add new version at weight 0"; "shift" (+ "step"): "Shift traffic"; "promote" (+ "step"):
  "Promote new version"; "roll_back" (+ "error"): "Roll back traffic". Output: Expected {endpoint_config,
  weights, then, step} (sluice.jobs.kinds.deployment.endpoint_updates).
- "check" (+ "expected", "watch_job"): "Check endpoint". Output: EndpointState; `rollback_requested` when
  watching and the job was cancelled or a rollback asked for.
- "autoscale": "Attach autoscaling" (sluice.jobs.kinds.deployment.autoscaling). Output: Attached; a failure
  detaches what was attached and is raised (AutoscalingAttachFailed).
"""

from __future__ import annotations

from typing import Any, Literal

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel

from sluice import clients
from sluice.jobs import services
from sluice.jobs.kinds.deployment import autoscaling, endpoint_updates
from sluice.jobs.kinds.deployment.audit import WORKFLOW
from sluice.jobs.kinds.deployment.endpoint_updates import Expected
from sluice.jobs.kinds.deployment.models import DeploymentExecutionInput
from sluice.jobs.kinds.deployment.outcome import requested_reason, rollback_reason
from sluice.jobs.kinds.deployment.steps import start_step
from sluice.jobs.models import JobStatus
from sluice.telemetry import logger, tracer


class AutoscalingAttachFailed(Exception):
    """Application Auto Scaling refused the target or the policy (what was attached is detached again)."""


class EndpointAction(BaseModel):
    action: Literal["add", "shift", "promote", "roll_back", "check", "autoscale"]
    job: DeploymentExecutionInput
    step: int = 0
    expected: Expected | None = None
    watch_job: bool = False
    error: dict[str, Any] | None = None


def _details(job_id: str) -> tuple[dict[str, Any], Any]:
    current = services.store().get(job_id)
    return (current.details if current else {}), current


@logger.inject_lambda_context
@tracer.capture_lambda_handler
def lambda_handler(event: dict[str, Any], _context: Any) -> dict[str, Any]:
    request = EndpointAction.model_validate(event)
    job = request.job
    logger.append_keys(job_id=job.job_id, action=request.action)
    sagemaker = clients.get("sagemaker")
    details, current = _details(job.job_id)
    if request.action == "check":
        assert request.expected is not None
        wanted = current is None or (current.status != JobStatus.CANCELLED and not details.get("rollback_requested"))
        if request.watch_job and not wanted:
            return {"state": "rollback_requested", "status": "", "endpoint_config": "", "weights": {}}
        state = endpoint_updates.check_endpoint(sagemaker, job.endpoint_name, request.expected)
        logger.info("endpoint checked", extra=state.model_dump())
        return state.model_dump(mode="json")
    scaling = clients.get("application-autoscaling")
    if request.action == "add":
        expected = endpoint_updates.add_new_version(sagemaker, job, details)
    elif request.action == "shift":
        start_step(services.store(), job.job_id, details, request.step, job.weights[request.step])
        expected = endpoint_updates.shift_traffic(sagemaker, job, details, request.step)
    elif request.action == "promote":
        expected = endpoint_updates.promote(sagemaker, scaling, job, details, request.step)
    elif request.action == "roll_back":
        requested = details.get("rollback_requested")
        cancelled = current is not None and current.status == JobStatus.CANCELLED
        if requested or cancelled:
            who, why = (requested or {}).get("by") or WORKFLOW, requested_reason(requested or {}, cancelled)
        else:
            who, why = WORKFLOW, rollback_reason(request.error)[1]
        expected = endpoint_updates.roll_back(sagemaker, scaling, job, details, why=why, who=who)
    else:
        return _attach(scaling, job)
    return expected.model_dump(mode="json")


def _attach(scaling: Any, job: DeploymentExecutionInput) -> dict[str, Any]:
    try:
        attached = autoscaling.attach(scaling, job.endpoint_name, job.variant_name, job.autoscaling)
    except (ClientError, BotoCoreError) as exc:
        message = str(exc)
        try:
            autoscaling.detach(scaling, job.endpoint_name, job.variant_name, why="its attachment failed half-way")
        except (ClientError, BotoCoreError) as cleanup:  # the attachment's own error is the one to report
            message = f"{message} (detaching what was attached failed too: {cleanup})"
        raise AutoscalingAttachFailed(message) from None
    services.store().merge_details(job.job_id, autoscaling={"attached": True, **attached.model_dump(mode="json")})
    return attached.model_dump(mode="json")

"""Starting a deployment's state machine, with an input built from the job row alone.

What submit records in the job's details (and nothing else feeds the workflow): endpoint_name,
model_name, variant_name, instance_type, instance_count, strategy, weights, promote, bake_seconds,
guards, autoscaling (and, for a registry version, model_package_arn and model_created). The job's
model is the catalog entry whose endpoint changes.
"""

from __future__ import annotations

from sluice.jobs.kinds.deployment.models import DeploymentExecutionInput, ResolvedAutoscaling, ResolvedGuards
from sluice.jobs.models import Job
from sluice.jobs.workflow_start import start_once
from sluice.settings import get_settings


def deployment_execution_input(job: Job) -> DeploymentExecutionInput:
    """Built from the job row alone, so a retried start sends exactly the same input."""
    details = job.details
    return DeploymentExecutionInput(
        job_id=job.job_id,
        caller=job.caller,
        model=job.model,
        endpoint_name=details["endpoint_name"],
        model_name=details["model_name"],
        variant_name=details["variant_name"],
        instance_type=details["instance_type"],
        instance_count=details["instance_count"],
        strategy=details["strategy"],
        weights=list(details["weights"]),
        promote=details["promote"],
        bake_seconds=details["bake_seconds"],
        guards=ResolvedGuards.model_validate(details["guards"]),
        autoscaling=ResolvedAutoscaling.model_validate(details["autoscaling"]),
        callback=job.callback,
    )


def start_deployment(job: Job) -> str:
    """Safe to repeat: a job whose execution is recorded is not started again (its ARN is returned)."""
    return start_once(
        job,
        get_settings().deployment_state_machine_arn,
        "SLUICE_DEPLOYMENT_STATE_MACHINE_ARN",
        deployment_execution_input,
    )

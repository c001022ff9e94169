"""A deployment's plan ("Plan deployment"): what the endpoint runs now, and whether an operator must
approve the new variant's instances first.

The weights per strategy were resolved by submission (DeploymentExecutionInput.weights); the plan reads
the endpoint and records its baseline: the EndpointConfig it runs (`baseline_endpoint_config`, which a
rollback returns to) and its variants with their weights and instances (`baseline_variants`). An endpoint
that is not InService, already runs a variant of the new version's name, or a new version whose Model
does not exist fails the deployment before anything changed (DeploymentNotPossible).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from sluice.jobs.kinds.batch_transform.policy import instance_approval
from sluice.jobs.kinds.deployment.models import DeploymentExecutionInput
from sluice.jobs.kinds.deployment.names import canary_config_name, promoted_config_name
from sluice.settings import Settings, approval_timeout_seconds

THROTTLES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "InternalFailure"})


class DeploymentNotPossible(Exception):
    """The endpoint cannot take this deployment as it is; nothing was changed."""


class SageMakerThrottled(Exception):
    """SageMaker throttled (or briefly failed) a call: the task is retried with backoff."""


class BaselineVariant(BaseModel):
    """One variant the endpoint served before the deployment (details.baseline_variants[])."""

    name: str
    model_name: str
    weight: float
    instance_type: str | None = None
    instance_count: int | None = None


class DeploymentPlan(BaseModel):
    """The state machine's $.plan."""

    needs_approval: bool
    reason: str
    instance_type: str
    instance_count: int
    # How long "Wait for an operator's approval" waits (ApprovalTimeoutHours, in seconds).
    timeout_seconds: int
    # The steps' count, so "Next step?" knows the last one.
    step_count: int
    # False for ab: the split stays after its bake.
    promote: bool
    # Recorded on the job when it starts running.
    record: dict[str, Any]


def sagemaker_call(call: Any, **kwargs: Any) -> dict[str, Any]:
    """One SageMaker call with throttling raised under the name the state machine retries."""
    try:
        return call(**kwargs)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in THROTTLES:
            raise SageMakerThrottled(f"{code}: {exc}") from None
        raise


def baseline_variants(described: dict[str, Any], config: dict[str, Any]) -> list[BaselineVariant]:
    """The endpoint's variants as it serves them: live weights and instance counts where SageMaker shows
    them (DescribeEndpoint), the config's initial ones otherwise."""
    live = {variant["VariantName"]: variant for variant in described.get("ProductionVariants") or []}
    found = []
    for variant in config.get("ProductionVariants") or []:
        now = live.get(variant["VariantName"], {})
        found.append(
            BaselineVariant(
                name=variant["VariantName"],
                model_name=variant["ModelName"],
                weight=float(now.get("CurrentWeight", variant.get("InitialVariantWeight", 1.0))),
                instance_type=variant.get("InstanceType"),
                instance_count=int(now.get("CurrentInstanceCount") or variant.get("InitialInstanceCount") or 1),
            )
        )
    return found


def plan_deployment(sagemaker: Any, job: DeploymentExecutionInput, settings: Settings) -> DeploymentPlan:
    try:
        described = sagemaker_call(sagemaker.describe_endpoint, EndpointName=job.endpoint_name)
    except ClientError as exc:
        raise DeploymentNotPossible(f"Endpoint {job.endpoint_name} cannot be read: {exc}") from None
    status = described.get("EndpointStatus")
    if status != "InService":
        raise DeploymentNotPossible(
            f"Endpoint {job.endpoint_name} is {status}, not InService: deploy once its current update has finished."
        )
    config_name = described["EndpointConfigName"]
    config = sagemaker_call(sagemaker.describe_endpoint_config, EndpointConfigName=config_name)
    variants = baseline_variants(described, config)
    if any(variant.name == job.variant_name for variant in variants):
        raise DeploymentNotPossible(
            f"Endpoint {job.endpoint_name} already runs a variant named {job.variant_name}: "
            "give the new version another variant_name."
        )
    if not variants:
        raise DeploymentNotPossible(f"Endpoint {job.endpoint_name} runs no production variant to compare with.")
    try:
        sagemaker_call(sagemaker.describe_model, ModelName=job.model_name)
    except ClientError as exc:
        raise DeploymentNotPossible(f"SageMaker Model {job.model_name} cannot be read: {exc}") from None
    decision = instance_approval(job.instance_type, job.instance_count, settings.batch_unapproved_instance_types)
    record = {
        "endpoint_name": job.endpoint_name,
        "strategy": job.strategy,
        "weights": job.weights,
        "variant_name": job.variant_name,
        "baseline_endpoint_config": config_name,
        "baseline_variants": [variant.model_dump(mode="json", exclude_none=True) for variant in variants],
        "canary_endpoint_config": canary_config_name(job.endpoint_name, job.job_id),
        "steps": [],
    }
    if job.promote:
        record["promoted_endpoint_config"] = promoted_config_name(job.endpoint_name, job.job_id)
    return DeploymentPlan(
        **decision.model_dump(),
        timeout_seconds=approval_timeout_seconds(settings),
        step_count=len(job.weights),
        promote=job.promote,
        record=record,
    )

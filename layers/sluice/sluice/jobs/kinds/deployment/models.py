"""What a deployment reads and records: POST /v1/deployments's body, the state machine's input, and
what the job shows of each traffic step (details.steps[])."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.json_schema import SkipJsonSchema

from sluice.jobs.kinds.batch_transform.models import INSTANCE_TYPE_PATTERN
from sluice.jobs.models import Callback

# SageMaker names: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
SAGEMAKER_NAME_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
MODEL_PACKAGE_ARN_PATTERN = r"^arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:[0-9]{12}:model-package/[a-zA-Z0-9-]{1,63}/[0-9]+$"
Strategy = Literal["canary", "linear", "blue_green", "ab"]
Outcome = Literal["promoted", "rolled_back", "split"]


class GuardSpec(BaseModel):
    """Left out, a guard takes the stack's default (DeploymentGuard* parameters)."""

    model_config = ConfigDict(extra="forbid")

    error_rate_percent: float | None = Field(default=None, ge=0, le=100)
    p99_latency_ms: float | None = Field(default=None, gt=0)
    low_confidence_percent: float | None = Field(default=None, ge=0, le=100)
    min_invocations: int | None = Field(default=None, ge=1)
    consecutive_breaches: int | None = Field(default=None, ge=1)


class AutoscalingSpec(BaseModel):
    """Attached to the new variant once it is promoted (target tracking on invocations per instance)."""

    model_config = ConfigDict(extra="forbid")

    min: int | None = Field(default=None, ge=1)
    max: int | None = Field(default=None, ge=1)
    target_invocations_per_instance: float | None = Field(default=None, gt=0)
    scale_in_cooldown: int | None = Field(default=None, ge=0)
    scale_out_cooldown: int | None = Field(default=None, ge=0)


class DeploymentRequest(BaseModel):
    """POST /v1/deployments (operators). Exactly one of model_name and model_package_arn."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128, description="The catalog entry whose SageMaker endpoint changes")
    model_name: str | None = Field(default=None, pattern=SAGEMAKER_NAME_PATTERN, description="A SageMaker Model")
    model_package_arn: str | None = Field(
        default=None, pattern=MODEL_PACKAGE_ARN_PATTERN, description="An Approved registry version"
    )
    strategy: Strategy = "canary"
    # canary: the traffic percentages of the new version, rising, ending at 100 (default DeploymentCanarySteps).
    steps: list[float] | None = Field(default=None, min_length=1, max_length=10)
    # linear: equal steps of this percentage up to 100 (default DeploymentLinearStepPercent).
    linear_step_percent: float | None = Field(default=None, gt=0, le=50)
    # ab: the fixed share of the new version; never promoted (default DeploymentAbSplitPercent).
    split_percent: float | None = Field(default=None, gt=0, lt=100)
    bake_seconds: int | None = Field(default=None, ge=1, le=86400)
    guards: GuardSpec = GuardSpec()
    autoscaling: AutoscalingSpec = AutoscalingSpec()
    # The new variant's instances; default: the endpoint's current (first) variant's.
    instance_type: str | None = Field(default=None, pattern=INSTANCE_TYPE_PATTERN)
    instance_count: int | None = Field(default=None, ge=1)
    variant_name: str | None = Field(default=None, pattern=SAGEMAKER_NAME_PATTERN)
    callback: Callback | None = None
    approved_by: SkipJsonSchema[Any] = None

    @model_validator(mode="after")
    def _one_version(self) -> DeploymentRequest:
        if (self.model_name is None) == (self.model_package_arn is None):
            raise ValueError("give exactly one of model_name (a SageMaker Model) and model_package_arn")
        return self


class ResolvedGuards(BaseModel):
    error_rate_percent: float
    p99_latency_ms: float
    low_confidence_percent: float
    min_invocations: int
    consecutive_breaches: int


class ResolvedAutoscaling(BaseModel):
    min: int
    max: int
    target_invocations_per_instance: float
    scale_in_cooldown: int
    scale_out_cooldown: int


class DeploymentExecutionInput(BaseModel):
    """Input of statemachines/deployment, built from the job row alone (kinds.deployment.start)."""

    job_id: str
    caller: str
    model: str  # the catalog entry
    endpoint_name: str
    model_name: str  # the new version's SageMaker Model (created from the package by submit)
    variant_name: str  # the new version's production variant
    instance_type: str
    instance_count: int = Field(ge=1)
    strategy: Strategy
    # The new version's share of traffic at each step, in percent (blue_green: [100]; ab: [split]).
    weights: list[float]
    # False for ab: the split stays, nothing is promoted or removed.
    promote: bool
    bake_seconds: int
    guards: ResolvedGuards
    autoscaling: ResolvedAutoscaling
    callback: Callback | None = None


class VariantObservation(BaseModel):
    """What one variant served in a guard window."""

    invocations: int
    error_rate_percent: float | None = None
    p99_latency_ms: float | None = None
    low_confidence_percent: float | None = None


class StepRecord(BaseModel):
    """One entry of details.steps[]: a traffic step and what its bake observed."""

    weight: float
    started: str | None = None
    ended: str | None = None
    # {"canary": VariantObservation, "baseline": VariantObservation}, the last guard reading of the step.
    observed: dict[str, VariantObservation] = {}
    # passed | breached | insufficient_traffic | rolled_back | cancelled
    verdict: str | None = None
    breaches: int = 0

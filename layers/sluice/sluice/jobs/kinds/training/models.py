"""What a training run reads and records: POST /v1/training-jobs's body, the state machine's input,
each attempt's plan, and what the job shows of each attempt (details.attempts[])."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator
from pydantic.json_schema import SkipJsonSchema

from sluice.jobs.kinds.batch_transform.models import INSTANCE_TYPE_PATTERN, S3_LOCATION_PATTERN
from sluice.jobs.models import Callback
from sluice.registry.models import GROUP_PATTERN, ApprovalStatus
from sluice.storage.keys import parse_s3_uri

# SageMaker's own bounds: MaxRuntimeInSeconds 1 s to 28 days.
MAX_SAGEMAKER_SECONDS = 28 * 24 * 3600


class RegisterSpec(BaseModel):
    """Register the trained model as a version of `group`: Approved when `metric` passes `threshold`."""

    model_config = ConfigDict(extra="forbid")

    group: str = Field(pattern=GROUP_PATTERN, description="Model package group (created if missing)")
    metric: str = Field(min_length=1, max_length=255, description="One of the trainer's metric names")
    threshold: float
    # True: the metric passes at or above the threshold (accuracy); False: at or below it (loss).
    higher_is_better: bool = True


class TrainingJobRequest(BaseModel):
    """POST /v1/training-jobs (operators). input_prefix is read from the caller's own uploads/ prefix of
    the data bucket (or a bucket in BatchExtraBuckets), as for batch jobs.

    The body's "register" is the attribute `registration` (pydantic reserves the name `register`);
    dump with by_alias=True to get the body's names back."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    trainer: str = Field(min_length=1, max_length=128, description="A trainer of the catalog's trainers section")
    input_prefix: str = Field(pattern=S3_LOCATION_PATTERN, description="s3://bucket/prefix: the train channel")
    # SageMaker takes hyperparameters as strings; numbers and booleans are sent as their JSON text.
    hyperparameters: dict[str, str | int | float | bool] = {}
    instance_type: str | None = Field(
        default=None, pattern=INSTANCE_TYPE_PATTERN, description="Default: the trainer's first"
    )
    instance_count: int = Field(default=1, ge=1)
    spot: bool = True
    max_runtime_seconds: int = Field(default=3600, ge=1, le=MAX_SAGEMAKER_SECONDS)
    # Spot only: time to wait for spot capacity plus the runtime; default twice max_runtime_seconds.
    max_wait_seconds: int | None = Field(default=None, ge=1, le=MAX_SAGEMAKER_SECONDS)
    max_attempts: int = Field(default=3, ge=1)
    registration: RegisterSpec | None = Field(default=None, alias="register")
    callback: Callback | None = None
    # Refused: an approval is an operator's decision (POST /v1/approvals/{id}/approve), never the requester's.
    approved_by: SkipJsonSchema[Any] = None

    @field_validator("approved_by", mode="before")
    @classmethod
    def _no_self_approval(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(
                "is not accepted: a run whose instance type needs an approval waits (AWAITING_APPROVAL) "
                "until another operator decides it through /v1/approvals."
            )
        return None

    @field_validator("input_prefix")
    @classmethod
    def _s3_uri(cls, value: str) -> str:
        parse_s3_uri(value)  # its ValueError names the expected form
        return value

    @field_validator("hyperparameters")
    @classmethod
    def _hyperparameters(cls, value: dict[str, Any]) -> dict[str, Any]:
        # SageMaker: at most 100 hyperparameters, keys up to 256 and values up to 2500 characters.
        if len(value) > 100:
            raise ValueError("at most 100 hyperparameters")
        for key, item in value.items():
            if not key or len(key) > 256:
                raise ValueError(f"hyperparameter name {key[:40]!r} must be 1 to 256 characters")
            if len(hyperparameter_text(item)) > 2500:
                raise ValueError(f"hyperparameter {key!r} is longer than 2500 characters")
        return value

    @field_validator("max_wait_seconds")
    @classmethod
    def _wait_covers_runtime(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is None:
            return value
        if info.data.get("spot") is False:
            raise ValueError("applies to spot training only; leave it out when spot is false")
        runtime = info.data.get("max_runtime_seconds")
        if runtime is not None and value < runtime:
            raise ValueError(
                f"must be at least max_runtime_seconds ({runtime}): SageMaker's wait for spot capacity "
                "includes the runtime (MaxWaitTimeInSeconds >= MaxRuntimeInSeconds)"
            )
        return value


def hyperparameter_text(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class MetricDefinitionSpec(BaseModel):
    """As CreateTrainingJob takes it (AlgorithmSpecification.MetricDefinitions)."""

    Name: str
    Regex: str


class TrainingExecutionInput(BaseModel):
    """Input of statemachines/training, built from the job row alone (kinds.training.start)."""

    job_id: str
    caller: str
    trainer: str
    image: str
    inference_image: str
    metric_definitions: list[MetricDefinitionSpec]
    resume_metric: str
    checkpoint_metric: str
    hyperparameters: dict[str, str]
    input_uri: str  # s3://bucket/prefix/: the train channel
    output_uri: str  # s3://<data bucket>/training-output/<caller>/<job>/
    checkpoint_uri: str  # s3://<data bucket>/checkpoints/<caller>/<job>/: the same for every attempt
    instance_type: str
    instance_count: int = Field(ge=1)
    # The trainer's instance types after instance_type, in order: tried when capacity runs out.
    fallback_instance_types: list[str] = []
    spot: bool
    max_runtime_seconds: int
    max_wait_seconds: int | None = None
    max_attempts: int = Field(ge=1)
    registration: RegisterSpec | None = Field(default=None, alias="register")
    callback: Callback | None = None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class AttemptPlan(BaseModel):
    """The state machine's $.plan: what the next attempt runs with, and what the run knows so far."""

    number: int = Field(ge=1)
    name_prefix: str  # the job id as a SageMaker name; the training job is <name_prefix>-<number>
    instance_type: str
    spot: bool
    # Spot interruptions and spot capacity shortages so far (TrainingSpotFailuresBeforeOnDemand).
    spot_failures: int = 0
    # The highest step any attempt checkpointed: a later attempt must resume at or above it.
    watermark: int = 0
    billable_seconds: int = 0


AttemptStatus = Literal["InProgress", "Completed", "Failed", "Stopping", "Stopped"]


class AttemptRecord(BaseModel):
    """One entry of details.attempts[]: one SageMaker training job of the run."""

    number: int
    training_job_name: str
    instance_type: str
    spot: bool
    status: AttemptStatus | None = None
    secondary_status: str | None = None
    failure_reason: str | None = None
    billable_seconds: int | None = None
    # The checkpoint step this attempt started from (0: a fresh start) and the last step it checkpointed.
    resumed_from_step: int | None = None
    last_checkpoint_step: int | None = None
    # Started below the run's watermark: it trained again what an earlier attempt had checkpointed.
    restarted_from_zero: bool = False
    # What the workflow made of its end: "succeeded", "interrupted", "capacity", "failed", "stopped", ...
    outcome: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


class ModelPackageRef(BaseModel):
    """details.model_package of a registered run."""

    arn: str
    group: str
    version: int
    approval_status: ApprovalStatus
    reason: str | None = None

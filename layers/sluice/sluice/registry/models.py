"""The registry's boundary: what the training workflow registers, and what operators list and decide."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# ModelPackageGroupName: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}
GROUP_PATTERN = r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$"
ApprovalStatus = Literal["Approved", "Rejected", "PendingManualApproval"]


class RegistrationRequest(BaseModel):
    """Input of the training workflow's "Register model version" step."""

    job_id: str
    caller: str
    trainer: str
    training_job_name: str
    group: str = Field(pattern=GROUP_PATTERN)
    metric: str
    threshold: float
    higher_is_better: bool = True
    # The run's final metrics (FinalMetricDataList of the last attempt), by name.
    metrics: dict[str, float]
    model_artifact: str  # s3://.../model.tar.gz
    inference_image: str
    # Where the ModelMetrics statistics document is written (the run's training-output folder).
    output_uri: str


class RegistryVersion(BaseModel):
    version: int
    model_package_arn: str
    metrics: dict[str, float] = {}
    approval_status: ApprovalStatus
    approval_description: str | None = None
    created: str
    job_id: str | None = None
    training_job_name: str | None = None
    model_artifact: str | None = None


class RegistryVersionList(BaseModel):
    group: str
    versions: list[RegistryVersion]


class VersionDecisionRequest(BaseModel):
    """POST /v1/registry/{group}/versions/{version}/approve|reject."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=1000)

"""What the jobs API reads and answers: request bodies, query strings and the job as a caller sees it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sluice.jobs.models import Callback, Job, JobKind, JobStatus

# Step Functions execution names, SageMaker InferenceIds and transform job names all accept it.
JOB_ID_PATTERN = r"^job-[0-9a-f]{32}$"


class JobListQuery(BaseModel):
    """GET /v1/jobs query string."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(default=20, ge=1, le=100)
    next_token: str | None = Field(default=None, min_length=1)
    status: JobStatus | None = None
    kind: JobKind | None = None

    @field_validator("status", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("kind", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


class OutputFile(BaseModel):
    key: str
    size_bytes: int
    url: str


class JobView(BaseModel):
    """A job as its caller sees it. Download URLs appear only once the job SUCCEEDED."""

    id: str
    object: Literal["job"] = "job"
    kind: JobKind
    model: str
    status: JobStatus
    created_at: str
    updated_at: str
    started_at: str | None = None
    finished_at: str | None = None
    failure_reason: str | None = None
    input_location: str
    output_location: str | None = None
    # Presigned GET of an async job's output.
    output_url: str | None = None
    # Presigned GETs of a batch job's output files (at most SLUICE_BATCH_OUTPUT_URLS_MAX).
    output_files: list[OutputFile] | None = None
    output_files_truncated: bool | None = None
    output_urls_expire_at: str | None = None
    callback: Callback | None = None
    details: dict[str, Any] = {}
    links: dict[str, str]

    @classmethod
    def of(cls, job: Job, **downloads: Any) -> JobView:
        links = {"self": f"/v1/jobs/{job.job_id}"}
        if not job.status.terminal:
            links["cancel"] = f"/v1/jobs/{job.job_id}/cancel"
        return cls(
            id=job.job_id,
            kind=job.kind,
            model=job.model,
            status=job.status,
            created_at=job.created_at,
            updated_at=job.updated_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            failure_reason=job.failure_reason,
            input_location=job.input_location,
            output_location=job.output_location,
            callback=job.callback,
            details=_public_details(job.details),
            links=links,
            **downloads,
        )


# The announcer's lease on a job's announcement (sluice.jobs.announcement_marks): bookkeeping, not news.
_ANNOUNCEMENT_LEASE_KEYS = ("claim", "claimed_until")


def _public_details(details: dict[str, Any]) -> dict[str, Any]:
    announcement = details.get("announcement")
    if not isinstance(announcement, dict):
        return details
    public = {key: value for key, value in announcement.items() if key not in _ANNOUNCEMENT_LEASE_KEYS}
    return {**details, "announcement": public}


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobView]
    # Pass as ?next_token= for the next page; null on the last page.
    next_token: str | None = None

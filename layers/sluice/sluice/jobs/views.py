"""What the jobs API reads and answers: request bodies, query strings and the job as a caller sees it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from sluice.jobs.models import Callback, Job, JobKind, JobStatus
from sluice.storage.keys import parse_s3_uri

# Step Functions execution names, SageMaker InferenceIds and transform job names all accept it.
JOB_ID_PATTERN = r"^job-[0-9a-f]{32}$"
UPLOAD_ID_PATTERN = r"^up-[0-9a-f]{32}$"
INSTANCE_TYPE_PATTERN = r"^ml\.[a-z0-9-]+\.[a-z0-9]+$"


class UploadRequest(BaseModel):
    """POST /v1/models/{model}/async/uploads. The size is signed into the URL, so S3 refuses any other."""

    model_config = ConfigDict(extra="forbid")

    size_bytes: int = Field(gt=0, description="Exact size of the file to upload, in bytes")


class UploadTicket(BaseModel):
    object: Literal["upload"] = "upload"
    upload_id: str
    model: str
    method: Literal["PUT"] = "PUT"
    url: str
    # Send exactly these headers with the PUT (they are part of the signature).
    headers: dict[str, str]
    size_bytes: int
    expires_at: str
    # Where the file lands: usable as a batch job's input_prefix too.
    s3_uri: str
    next: str


# s3://<bucket of 3-63 characters>/<prefix>: stated in the schema, so generated clients send only this form.
S3_LOCATION_PATTERN = r"^s3://[^/]{3,63}/"


class BatchJobRequest(BaseModel):
    """POST /v1/batch-jobs. Locations are s3:// URIs; in the data bucket a caller reaches only its own
    prefixes (uploads/<caller>/, async/<caller>/, batch-output/<caller>/)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=128)
    input_prefix: str = Field(
        pattern=S3_LOCATION_PATTERN, description="s3://bucket/prefix: every object under it is scored"
    )
    output_prefix: str | None = Field(
        default=None, pattern=S3_LOCATION_PATTERN, description="Default: batch-output/<caller>/<job id>/"
    )
    content_type: str | None = Field(default=None, description="Default: the first of the stack's batch types")
    split_type: Literal["Line", "None", "RecordIO", "TFRecord"] = "Line"
    instance_type: str | None = Field(default=None, pattern=INSTANCE_TYPE_PATTERN)
    instance_count: int = Field(default=1, ge=1)
    join_with_input: bool = False
    max_payload_mb: int = Field(default=6, ge=1, le=6)
    # Refused: an approval is an operator's decision (POST /v1/approvals/{id}/approve), never the caller's word.
    approved_by: SkipJsonSchema[Any] = None
    callback: Callback | None = None

    @field_validator("approved_by", mode="before")
    @classmethod
    def _no_self_approval(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(
                "is not accepted: a caller cannot approve its own instance type. A job whose instance "
                "type needs an approval waits (AWAITING_APPROVAL) until an operator approves it."
            )
        return None

    @field_validator("input_prefix", "output_prefix")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is None:
            return value
        bucket, _ = parse_s3_uri(value)  # its ValueError names the expected form
        if not 3 <= len(bucket) <= 63:
            raise ValueError(f"not an s3://bucket/prefix URI: {value!r}")
        return value


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
            details=job.details,
            links=links,
            **downloads,
        )


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobView]
    # Pass as ?next_token= for the next page; null on the last page.
    next_token: str | None = None

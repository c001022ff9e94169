"""What a batch job reads and runs with: POST /v1/batch-jobs's body and the batch state machine's input."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from sluice.jobs.models import Callback
from sluice.storage.keys import parse_s3_uri

INSTANCE_TYPE_PATTERN = r"^ml\.[a-z0-9-]+\.[a-z0-9]+$"
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


class BatchExecutionInput(BaseModel):
    """Input of statemachines/batch_transform."""

    job_id: str
    caller: str
    model: str
    model_name: str  # the SageMaker model the transform job runs
    input_bucket: str
    input_prefix: str
    # A SageMaker manifest (key in input_bucket) naming exactly the objects to score; None: every
    # object under input_prefix. A dropped file is scored through one, from its pinned copy.
    input_manifest_key: str | None = None
    output_bucket: str
    output_prefix: str
    content_type: str
    # The model's answer type (catalog backend.accept); the input's content type when absent.
    accept: str | None = None
    split_type: Literal["Line", "None", "RecordIO", "TFRecord"] = "Line"
    instance_type: str
    instance_count: int = Field(ge=1)
    join_with_input: bool = False
    max_payload_mb: int = Field(default=6, ge=1, le=6)
    callback: Callback | None = None

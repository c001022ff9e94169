"""What an async job reads and runs with: the upload ticket request and answer, and the async
state machine's input."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sluice.jobs.models import Callback

UPLOAD_ID_PATTERN = r"^up-[0-9a-f]{32}$"


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


class AsyncExecutionInput(BaseModel):
    """Input of statemachines/async_inference (backends without native async)."""

    job_id: str
    caller: str
    model: str
    input_bucket: str
    input_key: str
    output_bucket: str
    output_key: str
    content_type: str
    callback: Callback | None = None

"""SageMaker async inference notifications (the endpoints' success and error SNS topics) applied to jobs.

A notification's `inferenceId` is the job id (submission passes it as InferenceId). The JobStore's
forward-only transitions make this idempotent: a duplicate, or an error arriving after a success,
changes nothing and announces nothing.

The topics are the stack's, but anyone who may publish to them (or an endpoint another team points
at them) can name any inferenceId: a notification finishes a job only when its endpoint and input
location are the ones the job was submitted with (details.endpoint_name, input_location). Anything
else is a "mismatch" and changes nothing.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from sluice.jobs.models import Job, JobStatus
from sluice.jobs.status import MAX_REASON_CHARS
from sluice.jobs.store import JobStore


class _Parameters(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    content_type: str | None = Field(default=None, alias="contentType")
    endpoint_name: str | None = Field(default=None, alias="endpointName")
    input_location: str | None = Field(default=None, alias="inputLocation")
    output_location: str | None = Field(default=None, alias="outputLocation")
    failure_location: str | None = Field(default=None, alias="failureLocation")


class AsyncInferenceNotification(BaseModel):
    """The message SageMaker publishes for each async inference (eventName InferenceResult)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    inference_id: str = Field(alias="inferenceId", min_length=1)
    invocation_status: Literal["Completed", "Failed"] = Field(alias="invocationStatus")
    failure_reason: str | None = Field(default=None, alias="failureReason")
    event_time: str | None = Field(default=None, alias="eventTime")
    request_parameters: _Parameters = Field(default_factory=_Parameters, alias="requestParameters")
    response_parameters: _Parameters = Field(default_factory=_Parameters, alias="responseParameters")


Outcome = Literal["succeeded", "failed", "unchanged", "unknown_job", "mismatch"]


def apply_notification(store: JobStore, note: AsyncInferenceNotification) -> tuple[Outcome, Job | None]:
    """Move the job; returns what happened and the job when this notification finished it."""
    response = note.response_parameters
    if note.invocation_status == "Completed" and not response.output_location:
        raise ValueError("a Completed notification without responseParameters.outputLocation")
    current = store.get(note.inference_id)
    if current is None:
        return "unknown_job", None
    if not matches_job(current, note):
        return "mismatch", None
    details = {"endpoint_name": note.request_parameters.endpoint_name, "notified_at": note.event_time}
    details = {key: value for key, value in details.items() if value}
    if note.invocation_status == "Completed":
        if response.content_type:
            details["content_type"] = response.content_type
        job = store.transition(
            note.inference_id, JobStatus.SUCCEEDED, output_location=response.output_location, add_details=details
        )
        outcome: Outcome = "succeeded"
    else:
        reason = (note.failure_reason or "SageMaker reported the inference as failed without a reason.")[
            :MAX_REASON_CHARS
        ]
        if response.failure_location:
            details["failure_location"] = response.failure_location
        job = store.transition(note.inference_id, JobStatus.FAILED, failure_reason=reason, add_details=details)
        outcome = "failed"
    if job is not None:
        return outcome, job
    return "unchanged", None


def matches_job(job: Job, note: AsyncInferenceNotification) -> bool:
    """The endpoint the job was invoked on and the input it was given (and, once InvokeEndpointAsync
    answered, the output location it named); a job without a recorded endpoint (one the state
    machine runs) is never finished by a SageMaker notification."""
    expected = job.details.get("endpoint_name")
    given = note.request_parameters
    if not expected or given.endpoint_name != expected or given.input_location != job.input_location:
        return False
    output = note.response_parameters.output_location
    return not (note.invocation_status == "Completed" and job.output_location and output != job.output_location)

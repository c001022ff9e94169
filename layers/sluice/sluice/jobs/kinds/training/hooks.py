"""The training kind's part of the shared lifecycle: stopping the running attempt on cancel, a download
link for the trained model, and what SageMaker says when the reaper finds the workflow gone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from sluice import clients
from sluice.jobs.kind_hooks import KindHooks, Reconciliation, shared_stale_after
from sluice.jobs.models import Job, JobStatus
from sluice.jobs.status import MAX_REASON_CHARS
from sluice.settings import get_settings
from sluice.storage.keys import parse_s3_uri
from sluice.telemetry import logger

# What the workflow does around an attempt besides training (polls, waits, a retry's wait), at most.
_WORKFLOW_MARGIN_SECONDS = 3600


def current_training_job(job: Job) -> str | None:
    """The attempt the workflow recorded last (details.training_job_name, set before it is created)."""
    return job.details.get("training_job_name")


def stop_training_job(sagemaker: Any, name: str) -> str:
    """'stopped', 'already ended' (or never created), or 'failed: <code>'."""
    try:
        sagemaker.stop_training_job(TrainingJobName=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        # SageMaker answers a job that already ended, or was never created, with a ValidationException.
        if code in ("ValidationException", "ResourceNotFound"):
            return "already ended"
        logger.warning("could not stop the training job", extra={"training_job_name": name, "code": code})
        return f"failed: {code}"
    return "stopped"


def cancel(job: Job) -> dict[str, str]:
    name = current_training_job(job)
    if not name:
        return {"training_job": "none"}
    return {"training_job": stop_training_job(clients.get("sagemaker"), name)}


def outputs(job: Job) -> dict[str, Any]:
    """A presigned GET of the trained model (model.tar.gz), like an async job's output_url."""
    artifact = job.details.get("model_artifact")
    if not artifact:
        return {}
    settings = get_settings()
    bucket, key = parse_s3_uri(artifact)
    url = clients.get("s3").generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=settings.presigned_url_seconds
    )
    expires = datetime.now(UTC) + timedelta(seconds=settings.presigned_url_seconds)
    return {"output_url": url, "output_urls_expire_at": expires.isoformat(timespec="seconds")}


def reconcile(job: Job) -> Reconciliation | None:
    """The outcome of the attempt the workflow last recorded. Its execution is gone, so nothing else
    will look at that training job again: one still running is stopped (it would bill on), and a
    completed one is not registered here (the gate is the workflow's), so the job fails saying where
    the model is."""
    name = current_training_job(job)
    if not name:
        return None
    sagemaker = clients.get("sagemaker")
    try:
        described = sagemaker.describe_training_job(TrainingJobName=name)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        if error.get("Code") in ("ValidationException", "ResourceNotFound"):
            return Reconciliation(
                status=JobStatus.FAILED,
                failure_reason=f"Training job {name} does not exist: it was never created, or SageMaker no "
                "longer keeps it.",
                found=f"training job {name} not found",
            )
        raise
    status = described["TrainingJobStatus"]
    found = f"training job {name} {status}"
    if status == "Completed":
        artifact = described.get("ModelArtifacts", {}).get("S3ModelArtifacts", "")
        return Reconciliation(
            status=JobStatus.FAILED,
            failure_reason=(
                f"The run's workflow ended after training job {name} completed, before its model was "
                f"registered. The model is at {artifact}; submit the run again to register a version."
            )[:MAX_REASON_CHARS],
            found=found,
        )
    if status == "Failed":
        reason = described.get("FailureReason") or f"Training job {name} failed; SageMaker gave no reason."
        return Reconciliation(status=JobStatus.FAILED, failure_reason=reason[:MAX_REASON_CHARS], found=found)
    if status == "Stopped":
        return Reconciliation(
            status=JobStatus.FAILED,
            failure_reason=f"Training job {name} was stopped and the run's workflow ended.",
            found=found,
        )
    if status == "InProgress":
        stopped = stop_training_job(sagemaker, name)
        return Reconciliation(
            status=JobStatus.FAILED,
            failure_reason=f"The run's workflow ended while training job {name} was still running; the training "
            f"job was stopped ({stopped}). Its checkpoints are kept; submit the run again.",
            found=found,
            actions={"training_job": stopped},
        )
    # Stopping: the next run sees it Stopped.
    return Reconciliation(found=found)


def stale_after(status: JobStatus) -> float | None:
    if status == JobStatus.RUNNING:
        return running_limit_seconds()
    return shared_stale_after(status)


def running_limit_seconds() -> float:
    """The workflow writes to the job at every attempt's start and end, so a RUNNING run is unchanged for
    at most one attempt: its spot wait, which submit caps at twice TrainingMaxRuntimeSeconds."""
    return 2.0 * get_settings().training_max_runtime_seconds + _WORKFLOW_MARGIN_SECONDS


HOOKS = KindHooks(cancel=cancel, outputs=outputs, reconcile=reconcile, stale_after=stale_after)

"""The batch workflow's "Start transform job": one SageMaker transform job per attempt, never an orphan.

The protocol, against a cancel (sluice.jobs.queries.cancel_job, which moves the job to CANCELLED first
and then stops details.transform_job_name through the kind's cancel hook) arriving at any moment:

1. Record the deterministic name <job>-<attempt> on the job, only while the job is RUNNING (a
   conditional update). A job cancelled before this point is never given a transform job.
2. CreateTransformJob under that name. ResourceInUse means an earlier try of this same step created it
   (the name is ours alone): it is described and followed, never created twice.
3. Read the job again: cancelled meanwhile, the transform job just created is stopped here. A cancel
   after step 1 finds the name recorded and stops it itself, so whichever comes last stops it.

Errors are raised under names the state machine's Retry/Catch act on (TransformApiThrottled is
retried; TransformQuotaExceeded ends in "Transform quota exceeded"; anything else fails the job).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from sluice.jobs.kinds.batch_transform.policy import TransformPlan
from sluice.jobs.models import JobStatus
from sluice.jobs.store import JobStore
from sluice.telemetry import logger

_THROTTLES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "InternalFailure"})


class TransformApiThrottled(Exception):
    """SageMaker throttled (or briefly failed) the call itself: the task is retried with backoff."""


class TransformQuotaExceeded(Exception):
    """ResourceLimitExceeded: a quota, not a transient failure; the message says what to change."""


class TransformStartFailed(Exception):
    """SageMaker refused the transform job (a missing model, a bad request): the job fails with its words."""


class TransformStart(BaseModel):
    job_id: str
    model: str
    attempt: int
    transform: TransformPlan


class TransformStarted(BaseModel):
    transform_job_name: str
    # False: the job was cancelled (or ended) first; nothing runs (a transform job created meanwhile was stopped).
    started: bool
    arn: str | None = None
    stopped: bool = False


def transform_job_name(plan: TransformPlan, attempt: int) -> str:
    return f"{plan.name_prefix}-{attempt}"


def start_transform(store: JobStore, sagemaker: Any, request: TransformStart) -> TransformStarted:
    name = transform_job_name(request.transform, request.attempt)
    claimed = store.claim(
        request.job_id, statuses=(JobStatus.RUNNING,), transform_job_name=name, attempts=request.attempt
    )
    if claimed is None:
        logger.info("job no longer running: no transform job started", extra={"transform_job_name": name})
        return TransformStarted(transform_job_name=name, started=False)
    arn = _create(sagemaker, name, request)
    current = store.get(request.job_id)
    if current is not None and current.status == JobStatus.RUNNING:
        return TransformStarted(transform_job_name=name, started=True, arn=arn)
    # Cancelled between the record and the create: the cancel may have found nothing to stop yet.
    stopped = stop_transform_job(sagemaker, name)
    logger.info("job cancelled while its transform job started: stopped", extra={"transform_job_name": name})
    return TransformStarted(transform_job_name=name, started=False, arn=arn, stopped=stopped == "stopped")


def _create(sagemaker: Any, name: str, request: TransformStart) -> str:
    plan = request.transform
    try:
        return sagemaker.create_transform_job(
            TransformJobName=name,
            ModelName=plan.model_name,
            BatchStrategy="MultiRecord",
            MaxPayloadInMB=plan.max_payload_mb,
            TransformInput={
                "DataSource": {"S3DataSource": {"S3DataType": plan.input_data_type, "S3Uri": plan.input_uri}},
                "ContentType": plan.content_type,
                "SplitType": plan.split_type,
            },
            TransformOutput={"S3OutputPath": plan.output_uri, "AssembleWith": "Line", "Accept": plan.accept},
            TransformResources={"InstanceType": plan.instance_type, "InstanceCount": plan.instance_count},
            DataProcessing={"InputFilter": "$", "JoinSource": plan.join_source, "OutputFilter": "$"},
            Tags=[{"Key": "sluice:job-id", "Value": request.job_id}, {"Key": "sluice:model", "Value": request.model}],
        )["TransformJobArn"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", str(exc))
        if code in ("ResourceInUse", "ResourceInUseException"):
            # Created by an earlier try of this step (a timeout after the call): the same job, followed.
            return _describe(sagemaker, name)
        if code in _THROTTLES:
            raise TransformApiThrottled(f"{code}: {message}") from None
        if code == "ResourceLimitExceeded":
            raise TransformQuotaExceeded(
                f"SageMaker refused the transform job: a quota for {plan.instance_count} x {plan.instance_type} "
                f"is exhausted ({message}). Request a quota increase, or use a smaller instance type or count."
            ) from None
        raise TransformStartFailed(f"SageMaker refused transform job {name}: {code}: {message}") from None


def _describe(sagemaker: Any, name: str) -> str:
    try:
        return sagemaker.describe_transform_job(TransformJobName=name)["TransformJobArn"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in _THROTTLES:
            raise TransformApiThrottled(f"{code}: {exc}") from None
        raise TransformStartFailed(f"Transform job {name} exists but cannot be read: {exc}") from None


def stop_transform_job(sagemaker: Any, name: str) -> str:
    """'stopped', 'already ended' (or never created), or 'failed: <code>'."""
    try:
        sagemaker.stop_transform_job(TransformJobName=name)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        # A transform job that already ended (or never started) cannot be stopped: nothing left to do.
        if code in ("ValidationException", "ResourceNotFound"):
            return "already ended"
        logger.warning("could not stop the transform job", extra={"transform_job_name": name, "code": code})
        return f"failed: {code}"
    return "stopped"

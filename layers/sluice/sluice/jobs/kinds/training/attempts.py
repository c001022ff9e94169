"""The training workflow's "Check checkpoint and start attempt": one SageMaker training job per attempt,
resumed from the run's checkpoint location, never an orphan.

The protocol (the batch kind's transform_start, for training jobs), against a cancel arriving at any moment:

0. Before attempt n > 1 of a run that checkpointed a step (plan.watermark > 0), the checkpoint location
   must hold an object: an empty one would make the attempt train from zero, so the run fails closed
   (NoCheckpointToResume) instead.
1. Record the attempt in details.attempts[] and its name <prefix>-<n> as details.training_job_name, only
   while the job is RUNNING (a conditional update). A job cancelled before this is never given one.
2. CreateTrainingJob under that name. ResourceInUse means an earlier try of this same step created it
   (the name is this run's alone): it is followed, never created twice.
3. Read the job again: cancelled meanwhile, the training job just created is stopped here. A cancel
   after step 1 finds the name recorded and stops it itself, so whichever comes last stops it.

Errors are raised under names the state machine's Retry/Catch act on: TrainingApiThrottled is retried,
NoCheckpointToResume ends in "No checkpoint to resume from", TrainingQuotaExceeded and
TrainingStartFailed fail the job with what to do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel

from sluice.jobs.kinds.training.hooks import stop_training_job
from sluice.jobs.kinds.training.models import AttemptPlan, AttemptRecord, TrainingExecutionInput
from sluice.jobs.models import JobStatus
from sluice.jobs.store import JobStore
from sluice.settings import Settings
from sluice.storage.keys import parse_s3_uri
from sluice.telemetry import logger

THROTTLES = frozenset({"ThrottlingException", "Throttling", "TooManyRequestsException", "InternalFailure"})
# Where SageMaker mirrors CheckpointConfig.S3Uri inside the container (its documented default).
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
VOLUME_SIZE_GB = 30


class NoCheckpointToResume(Exception):
    """The checkpoint location is empty although an earlier attempt checkpointed: fail closed."""


class TrainingApiThrottled(Exception):
    """SageMaker throttled (or briefly failed) the call itself: the task is retried with backoff."""


class TrainingQuotaExceeded(Exception):
    """ResourceLimitExceeded: a quota, not a transient failure; the message says what to change."""


class TrainingStartFailed(Exception):
    """SageMaker refused the training job (a bad image, role or request): the job fails with its words."""


class AttemptStart(BaseModel):
    job: TrainingExecutionInput
    plan: AttemptPlan


class AttemptStarted(BaseModel):
    training_job_name: str
    # False: the job was cancelled (or ended) first; nothing runs (a training job created meanwhile was stopped).
    started: bool
    arn: str | None = None
    stopped: bool = False


def training_job_name(plan: AttemptPlan) -> str:
    return f"{plan.name_prefix}-{plan.number}"


def recorded_attempts(details: dict[str, Any]) -> list[AttemptRecord]:
    return [AttemptRecord.model_validate(item) for item in details.get("attempts") or []]


def with_attempt(attempts: list[AttemptRecord], record: AttemptRecord) -> list[AttemptRecord]:
    """The list with `record` in its number's place (a retried step replaces, never duplicates)."""
    return sorted([a for a in attempts if a.number != record.number] + [record], key=lambda a: a.number)


def ensure_checkpoint(s3: Any, job: TrainingExecutionInput, plan: AttemptPlan) -> None:
    if plan.number <= 1 or plan.watermark <= 0:
        return
    bucket, prefix = parse_s3_uri(job.checkpoint_uri)
    listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
    if listed.get("KeyCount", 0) > 0:
        return
    raise NoCheckpointToResume(
        f"no checkpoint to resume from: attempt {plan.number} would train from zero although step "
        f"{plan.watermark} was checkpointed under {job.checkpoint_uri}"
    )


def start_attempt(
    store: JobStore, sagemaker: Any, s3: Any, request: AttemptStart, settings: Settings
) -> AttemptStarted:
    job, plan = request.job, request.plan
    name = training_job_name(plan)
    ensure_checkpoint(s3, job, plan)
    current = store.get(job.job_id)
    attempts = recorded_attempts(current.details) if current else []
    earlier = next((a for a in attempts if a.number == plan.number), None)
    record = earlier or AttemptRecord(
        number=plan.number,
        training_job_name=name,
        instance_type=plan.instance_type,
        spot=plan.spot,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    claimed = store.claim(
        job.job_id,
        statuses=(JobStatus.RUNNING,),
        training_job_name=name,
        attempts=[a.model_dump(mode="json", exclude_none=True) for a in with_attempt(attempts, record)],
    )
    if claimed is None:
        logger.info("job no longer running: no training job started", extra={"training_job_name": name})
        return AttemptStarted(training_job_name=name, started=False)
    arn = _create(sagemaker, name, request, settings)
    current = store.get(job.job_id)
    if current is not None and current.status == JobStatus.RUNNING:
        return AttemptStarted(training_job_name=name, started=True, arn=arn)
    # Cancelled between the record and the create: the cancel may have found nothing to stop yet.
    stopped = stop_training_job(sagemaker, name)
    logger.info("job cancelled while its training job started: stopped", extra={"training_job_name": name})
    return AttemptStarted(training_job_name=name, started=False, arn=arn, stopped=stopped == "stopped")


def create_request(name: str, request: AttemptStart, settings: Settings) -> dict[str, Any]:
    """CreateTrainingJob's arguments: every attempt of a run shares its input, output and checkpoint location."""
    job, plan = request.job, request.plan
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": job.max_runtime_seconds}
    if plan.spot:
        # SageMaker requires the wait (capacity wait plus runtime) to cover the runtime.
        stopping["MaxWaitTimeInSeconds"] = max(
            job.max_wait_seconds or 2 * job.max_runtime_seconds, job.max_runtime_seconds
        )
    return {
        "TrainingJobName": name,
        "AlgorithmSpecification": {
            "TrainingImage": job.image,
            "TrainingInputMode": "File",
            "MetricDefinitions": [definition.model_dump() for definition in job.metric_definitions],
        },
        "RoleArn": settings.training_role_arn,
        "InputDataConfig": [
            {
                "ChannelName": "train",
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": job.input_uri,
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": "text/csv",
            }
        ],
        # No KmsKeyId: the data bucket's default encryption (the stack's key) applies to what SageMaker writes.
        "OutputDataConfig": {"S3OutputPath": job.output_uri},
        "ResourceConfig": {
            "InstanceType": plan.instance_type,
            "InstanceCount": job.instance_count,
            "VolumeSizeInGB": VOLUME_SIZE_GB,
        },
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": plan.spot,
        "CheckpointConfig": {"S3Uri": job.checkpoint_uri, "LocalPath": CHECKPOINT_LOCAL_PATH},
        "HyperParameters": dict(job.hyperparameters),
        "Tags": [{"Key": "sluice:job-id", "Value": job.job_id}, {"Key": "sluice:trainer", "Value": job.trainer}],
    }


def _create(sagemaker: Any, name: str, request: AttemptStart, settings: Settings) -> str:
    plan = request.plan
    try:
        return sagemaker.create_training_job(**create_request(name, request, settings))["TrainingJobArn"]
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", str(exc))
        if code in ("ResourceInUse", "ResourceInUseException"):
            # Created by an earlier try of this step (a timeout after the call): the same job, followed.
            return _describe(sagemaker, name)
        if code in THROTTLES:
            raise TrainingApiThrottled(f"{code}: {message}") from None
        if code == "ResourceLimitExceeded":
            kind = "spot training" if plan.spot else "training"
            raise TrainingQuotaExceeded(
                f"SageMaker refused training job {name}: a quota for {request.job.instance_count} x "
                f"{plan.instance_type} ({kind} job usage) is exhausted ({message}). Request a quota increase, "
                "or use a smaller instance type or count."
            ) from None
        raise TrainingStartFailed(f"SageMaker refused training job {name}: {code}: {message}") from None


def _describe(sagemaker: Any, name: str) -> str:
    try:
        return sagemaker.describe_training_job(TrainingJobName=name)["TrainingJobArn"]
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in THROTTLES:
            raise TrainingApiThrottled(f"{code}: {exc}") from None
        raise TrainingStartFailed(f"Training job {name} exists but cannot be read: {exc}") from None

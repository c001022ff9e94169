"""The training workflow tests' world: the jobs stack of tests/workflow_support (template.yaml in an
in-process moto, the real ASL run by moto's interpreter, the real handlers in-process) with the
training parameters at their minimum, and SageMaker training jobs scripted per job name.

moto's SageMaker is adjusted in-process only where the tests need to steer it, each deviation said here:

- DescribeTrainingJob: moto marks every training job Completed at once and reports no billing. A
  scripted job (`TrainingScript.attempts[name]`, an `Attempt`) is InProgress from its creation (as on
  AWS), answers InProgress for `polls` status checks, then its end, as AWS reports it: Completed;
  Failed/Interrupted with "Spot interruption: ..."; Stopped/MaxWaitTimeExceeded; Failed with
  "CapacityError: ...", "AlgorithmError: ..." or "ClientError: ..."; Stopped/MaxRuntimeExceeded; or
  Stopped. The end carries BillableTimeInSeconds and FinalMetricDataList: the trainer's resume metric
  (when it logged "resumed from epoch K"), its checkpoint metric (the last "checkpoint saved: epoch K")
  and any other metric. Every later describe repeats the end. A job nobody scripted stays as moto has it.
- Checkpoints: when a scripted attempt that checkpointed reaches its end, an object for that step is
  written under its CheckpointConfig.S3Uri, as SageMaker's checkpoint sync would have uploaded it.
- CreateTrainingJob of an existing name answers ResourceInUse (moto silently overwrites), and
  `create_errors` (by name prefix, one per call) make it answer errors such as ThrottlingException or
  ResourceLimitExceeded.
- StopTrainingJob (moto has none): an InProgress or Stopping job becomes Stopped/Stopped (AWS passes
  through Stopping first); any other answers ValidationException, as AWS does for an ended job.
- `next_attempts` script, in creation order, the training jobs of a run whose job id a test does not
  know in advance (one submitted through the API).
- Hooks run a test's action at a chosen moment, by job name: `before_create`, `after_create`,
  `on_describe` (the first status check) and `on_end` (when the end is played, after its checkpoint
  was written): a cancel mid-attempt, the checkpoint objects deleted, ...
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from sluice.storage.keys import parse_s3_uri
from tests import workflow_support
from tests.workflow_support import ACCOUNT, REGION, JobsStack, jobs_stack

# Every wait of the training workflow at its minimum: a poll loop of at most 3 checks (1 s, then 2 s).
TRAINING_PARAMETERS = {
    "TrainingPollSeconds": "1",
    "TrainingPollMaxSeconds": "2",
    "TrainingMaxPolls": "3",
    "TrainingRetryWaitSeconds": "1",
}
RESUME_METRIC = "sluice:resumed_from_step"
CHECKPOINT_METRIC = "sluice:checkpoint_step"

_ENDS: dict[str, tuple[str, str, str | None]] = {
    "Completed": ("Completed", "Completed", None),
    "Interrupted": (
        "Failed",
        "Interrupted",
        "Spot interruption: the spot instance was reclaimed by EC2 while training. Training can resume from "
        "the latest checkpoint.",
    ),
    "MaxWaitTimeExceeded": ("Stopped", "MaxWaitTimeExceeded", None),
    "CapacityError": (
        "Failed",
        "Failed",
        "CapacityError: Unable to provision requested ML compute capacity. Please retry using a different ML "
        "instance type.",
    ),
    "AlgorithmError": (
        "Failed",
        "Failed",
        "AlgorithmError: ExecuteUserScriptError: ValueError: could not convert string to float: 'setosa,5.1'",
    ),
    "ClientError": ("Failed", "Failed", "ClientError: No S3 objects found under S3 URL given in input data source."),
    "MaxRuntimeExceeded": ("Stopped", "MaxRuntimeExceeded", None),
    "Stopped": ("Stopped", "Stopped", None),
}


@dataclass
class Attempt:
    """What one training job reports: InProgress for `polls` status checks, then `end` (a key of _ENDS)."""

    end: str = "Completed"
    polls: int = 0
    # The step it logged "resumed from epoch K" for (None: a fresh start, which logs nothing).
    resumed_from: int | None = None
    # The last step it logged "checkpoint saved: epoch K" for (and whose checkpoint it uploaded).
    checkpoint: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    billable_seconds: int = 60

    def final_metrics(self) -> dict[str, float]:
        found = dict(self.metrics)
        if self.resumed_from is not None:
            found[RESUME_METRIC] = float(self.resumed_from)
        if self.checkpoint is not None:
            found[CHECKPOINT_METRIC] = float(self.checkpoint)
        return found


@dataclass
class TrainingScript:
    attempts: dict[str, Attempt] = field(default_factory=dict)
    # Scripts for training jobs nobody scripted by name (a run submitted through the API), in creation order.
    next_attempts: list[Attempt] = field(default_factory=list)
    create_errors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)
    describes: dict[str, int] = field(default_factory=dict)
    before_create: dict[str, Callable[[], Any]] = field(default_factory=dict)
    after_create: dict[str, Callable[[], Any]] = field(default_factory=dict)
    on_describe: dict[str, Callable[[], Any]] = field(default_factory=dict)
    on_end: dict[str, Callable[[], Any]] = field(default_factory=dict)
    # Errors DescribeTrainingJob answers first, by job name, one per call: (code, message).
    describe_errors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)

    def install(self, patcher: pytest.MonkeyPatch) -> None:
        from moto.core.exceptions import JsonRESTError
        from moto.core.responses import EmptyResult
        from moto.core.utils import utcnow
        from moto.sagemaker.models import SageMakerModelBackend
        from moto.sagemaker.responses import SageMakerResponse

        script = self
        create, describe = SageMakerModelBackend.create_training_job, SageMakerModelBackend.describe_training_job

        def create_training_job(backend: Any, training_job_name: str, **kwargs: Any) -> Any:
            for prefix, errors in script.create_errors.items():
                if training_job_name.startswith(prefix) and errors:
                    raise JsonRESTError(*errors.pop(0))
            if training_job_name in backend.training_jobs:
                raise JsonRESTError("ResourceInUse", f"Training job {training_job_name} already exists.")
            if training_job_name in script.before_create:
                script.before_create.pop(training_job_name)()
            job = create(backend, training_job_name=training_job_name, **kwargs)
            if training_job_name not in script.attempts and script.next_attempts:
                script.attempts[training_job_name] = script.next_attempts.pop(0)
            if training_job_name in script.attempts:
                job.training_job_status, job.secondary_status = "InProgress", "Training"
                job.final_metric_data_list = []
            script.created.append({"TrainingJobName": training_job_name, **kwargs})
            if training_job_name in script.after_create:
                script.after_create.pop(training_job_name)()
            return job

        def describe_training_job(backend: Any, training_job_name: str) -> Any:
            if script.describe_errors.get(training_job_name):
                raise JsonRESTError(*script.describe_errors[training_job_name].pop(0))
            job = backend.training_jobs.get(training_job_name)
            attempt = script.attempts.get(training_job_name)
            if attempt is not None and job is not None and training_job_name not in script.stopped:
                checks = script.describes.get(training_job_name, 0)
                script.describes[training_job_name] = checks + 1
                if checks == attempt.polls:
                    play_end(job, attempt)
            if training_job_name in script.on_describe and job is not None:
                script.on_describe.pop(training_job_name)()
            return describe(backend, training_job_name)

        def play_end(job: Any, attempt: Attempt) -> None:
            job.training_job_status, job.secondary_status, reason = _ENDS[attempt.end]
            if reason:
                job.failure_reason = reason
            job.billable_time_in_seconds = attempt.billable_seconds
            job.training_time_in_seconds = attempt.billable_seconds
            now = utcnow()
            job.final_metric_data_list = [
                {"MetricName": name, "Value": value, "Timestamp": now}
                for name, value in attempt.final_metrics().items()
            ]
            if attempt.checkpoint is not None:
                write_checkpoint(job.checkpoint_config["S3Uri"], attempt.checkpoint)
            if job.training_job_name in script.on_end:
                script.on_end.pop(job.training_job_name)()

        def stop_training_job(response: Any) -> Any:
            name = response._get_param("TrainingJobName")
            job = response.sagemaker_backend.training_jobs.get(name)
            if job is None:
                raise JsonRESTError("ValidationException", f"Requested resource not found: {name}")
            if job.training_job_status not in ("InProgress", "Stopping"):
                raise JsonRESTError(
                    "ValidationException", f"The job {name} is {job.training_job_status}: not stoppable"
                )
            job.training_job_status, job.secondary_status = "Stopped", "Stopped"
            script.stopped.append(name)
            return EmptyResult()

        patcher.setattr(SageMakerModelBackend, "create_training_job", create_training_job)
        patcher.setattr(SageMakerModelBackend, "describe_training_job", describe_training_job)
        patcher.setattr(SageMakerResponse, "stop_training_job", stop_training_job, raising=False)

    def status_of(self, name: str) -> str:
        from moto.sagemaker.models import sagemaker_backends

        return sagemaker_backends[ACCOUNT][REGION].training_jobs[name].training_job_status


def write_checkpoint(checkpoint_uri: str, step: int) -> None:
    """What SageMaker's checkpoint sync uploads: the trainer's checkpoint file of that step."""
    from moto.s3.models import s3_backends

    bucket, prefix = parse_s3_uri(checkpoint_uri)
    s3_backends[ACCOUNT]["aws"].put_object(bucket, f"{prefix}checkpoint-{step:05d}.pkl", f"step {step}".encode())


@dataclass
class TrainingStack:
    jobs: JobsStack
    training: TrainingScript

    def __getattr__(self, name: str) -> Any:
        return getattr(self.jobs, name)


@contextmanager
def training_stack(stack_name: str, catalog: dict[str, Any]) -> Iterator[TrainingStack]:
    patcher = pytest.MonkeyPatch()
    try:
        # jobs_stack deploys with workflow_support.TEST_PARAMETERS: the training waits are added to them.
        patcher.setattr(
            workflow_support, "TEST_PARAMETERS", {**workflow_support.TEST_PARAMETERS, **TRAINING_PARAMETERS}
        )
        with jobs_stack(stack_name, catalog) as stack:
            patcher.undo()
            script = TrainingScript()
            steering = pytest.MonkeyPatch()
            script.install(steering)
            try:
                yield TrainingStack(jobs=stack, training=script)
            finally:
                steering.undo()
    finally:
        patcher.undo()

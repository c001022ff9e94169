"""The training kind's lifecycle hooks: cancel stops the running attempt, the reaper reads SageMaker."""

from __future__ import annotations

import pytest
from moto.sagemaker import models as sagemaker_models

from sluice.jobs.kinds import hooks
from sluice.jobs.models import Job, JobKind, JobStatus
from sluice.settings import get_settings
from tests.conftest import shared_client

ROLE = "arn:aws:iam::123456789012:role/sluice-training"


@pytest.fixture
def training(aws, monkeypatch):
    """moto's training jobs, told a status and given the StopTrainingJob moto lacks (AWS: Stopping)."""
    stopped: list[str] = []

    def stop_training_job(self, training_job_name):
        job = self.training_jobs[training_job_name]
        if job.training_job_status != "InProgress":
            from moto.sagemaker.exceptions import ValidationError

            raise ValidationError(message=f"The training job {training_job_name} is not in progress")
        job.training_job_status = "Stopping"
        stopped.append(training_job_name)

    monkeypatch.setattr(sagemaker_models.SageMakerModelBackend, "stop_training_job", stop_training_job, raising=False)
    from moto.sagemaker import responses

    def stop_response(self):
        self.sagemaker_backend.stop_training_job(self._get_param("TrainingJobName"))
        return "{}"

    monkeypatch.setattr(responses.SageMakerResponse, "stop_training_job", stop_response, raising=False)
    return stopped


def create_training_job(name: str, status: str, **described) -> None:
    sagemaker = shared_client("sagemaker")
    sagemaker.create_training_job(
        TrainingJobName=name,
        AlgorithmSpecification={"TrainingImage": "iris-trainer:1", "TrainingInputMode": "File"},
        RoleArn=ROLE,
        OutputDataConfig={"S3OutputPath": "s3://sluice-test-data/training-output/platform/job-1/"},
        ResourceConfig={"InstanceType": "ml.m5.large", "InstanceCount": 1, "VolumeSizeInGB": 30},
        StoppingCondition={"MaxRuntimeInSeconds": 600},
    )
    backend = sagemaker_models.sagemaker_backends["123456789012"]["us-east-1"]
    job = backend.training_jobs[name]
    job.training_job_status = status
    for key, value in described.items():
        setattr(job, key, value)


def training_run(name: str | None = "job-1-2") -> Job:
    details = {"trainer": "iris", "max_runtime_seconds": 600, "max_attempts": 3}
    if name:
        details["training_job_name"] = name
    return Job(
        job_id="job-1",
        caller="platform",
        kind=JobKind.TRAINING,
        model="iris",
        status=JobStatus.RUNNING,
        input_location="s3://sluice-test-data/uploads/platform/iris/",
        details=details,
    )


def test_cancel_stops_the_attempt_that_is_running(training):
    create_training_job("job-1-2", "InProgress")
    assert hooks(JobKind.TRAINING).cancel(training_run()) == {"training_job": "stopped"}
    assert training == ["job-1-2"]


def test_cancel_before_any_attempt_has_nothing_to_stop(training):
    assert hooks(JobKind.TRAINING).cancel(training_run(None)) == {"training_job": "none"}


def test_cancel_after_the_attempt_ended_changes_nothing(training):
    create_training_job("job-1-2", "Completed")
    assert hooks(JobKind.TRAINING).cancel(training_run()) == {"training_job": "already ended"}
    assert training == []


def test_the_reaper_stops_a_training_job_its_workflow_no_longer_follows(training):
    create_training_job("job-1-2", "InProgress")
    found = hooks(JobKind.TRAINING).reconcile(training_run())
    assert found.status == JobStatus.FAILED
    assert found.actions == {"training_job": "stopped"}
    assert "still running" in found.failure_reason
    assert "checkpoints are kept" in found.failure_reason


def test_the_reaper_fails_a_completed_but_unregistered_run_saying_where_the_model_is(training):
    create_training_job("job-1-2", "Completed")
    found = hooks(JobKind.TRAINING).reconcile(training_run())
    assert found.status == JobStatus.FAILED
    assert "before its model was registered" in found.failure_reason
    assert "model.tar.gz" in found.failure_reason


def test_the_reaper_reports_sagemakers_failure_reason(training):
    create_training_job("job-1-2", "Failed", failure_reason="AlgorithmError: bad CSV row 3")
    found = hooks(JobKind.TRAINING).reconcile(training_run())
    assert (found.status, found.failure_reason) == (JobStatus.FAILED, "AlgorithmError: bad CSV row 3")


def test_the_reaper_fails_a_run_whose_training_job_does_not_exist(training):
    found = hooks(JobKind.TRAINING).reconcile(training_run("job-1-9"))
    assert found.status == JobStatus.FAILED
    assert "does not exist" in found.failure_reason


def test_a_running_run_is_stale_only_after_a_whole_attempt_could_have_run():
    limit = hooks(JobKind.TRAINING).stale_after(JobStatus.RUNNING)
    assert limit > 2 * get_settings().training_max_runtime_seconds
    assert hooks(JobKind.TRAINING).stale_after(JobStatus.QUEUED) == get_settings().reaper_queued_limit_minutes * 60


def test_a_succeeded_run_offers_its_model_for_download(aws):
    job = training_run()
    job.details["model_artifact"] = "s3://sluice-test-data/training-output/platform/job-1/job-1-2/output/model.tar.gz"
    shown = hooks(JobKind.TRAINING).outputs(job)
    assert "model.tar.gz" in shown["output_url"]
    assert "X-Amz-Signature" in shown["output_url"]

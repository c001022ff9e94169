"""Starting a training run's state machine, with an input built from the job row alone.

What submit records in the job's details (and nothing else feeds the workflow): trainer, image,
inference_image, metric_definitions, resume_metric, checkpoint_metric, hyperparameters,
instance_type, instance_count, fallback_instance_types, spot, max_runtime_seconds,
max_wait_seconds, max_attempts, checkpoint_uri, register. input_location is the train channel and
output_location the run's training-output folder.
"""

from __future__ import annotations

from sluice.jobs.kinds.training.models import MetricDefinitionSpec, RegisterSpec, TrainingExecutionInput
from sluice.jobs.models import Job
from sluice.jobs.workflow_start import start_once
from sluice.settings import get_settings


def training_execution_input(job: Job) -> TrainingExecutionInput:
    """Built from the job row alone, so a retried start sends exactly the same input."""
    details = job.details
    register = details.get("register")
    return TrainingExecutionInput(
        job_id=job.job_id,
        caller=job.caller,
        trainer=details["trainer"],
        image=details["image"],
        inference_image=details["inference_image"],
        metric_definitions=[MetricDefinitionSpec.model_validate(item) for item in details["metric_definitions"]],
        resume_metric=details["resume_metric"],
        checkpoint_metric=details["checkpoint_metric"],
        hyperparameters=details.get("hyperparameters") or {},
        input_uri=job.input_location,
        output_uri=job.output_location or "",
        checkpoint_uri=details["checkpoint_uri"],
        instance_type=details["instance_type"],
        instance_count=details["instance_count"],
        fallback_instance_types=list(details.get("fallback_instance_types") or []),
        spot=details["spot"],
        max_runtime_seconds=details["max_runtime_seconds"],
        max_wait_seconds=details.get("max_wait_seconds"),
        max_attempts=details["max_attempts"],
        registration=RegisterSpec.model_validate(register) if register else None,
        callback=job.callback,
    )


def start_training(job: Job) -> str:
    """Safe to repeat: a job whose execution is recorded is not started again (its ARN is returned)."""
    return start_once(
        job, get_settings().training_state_machine_arn, "SLUICE_TRAINING_STATE_MACHINE_ARN", training_execution_input
    )

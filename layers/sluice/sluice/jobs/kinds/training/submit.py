"""POST /v1/training-jobs (operators): validate a training run against its trainer, create the job, start it.

A run reads its train channel from the caller's own uploads/ prefix of the data bucket (or a bucket in
settings.batch_extra_buckets), by the same rules and checks as a batch job's input. Everything the
state machine needs is written to the job row here (kinds.training.start builds the execution input
from the row alone), so a retried start sends the same input. An instance type outside
settings.batch_unapproved_instance_types makes the run wait for another operator's approval
(AWAITING_APPROVAL), as a batch job does.
"""

from __future__ import annotations

from typing import Any

from sluice.auth.roles import require_operator
from sluice.catalog.models import TrainerEntry
from sluice.jobs import idempotency, services
from sluice.jobs.callback_topics import check_callback_topic
from sluice.jobs.kinds.batch_transform.submit import check_input_exists, check_location, initial_status
from sluice.jobs.kinds.training.models import MAX_SAGEMAKER_SECONDS, TrainingJobRequest, hyperparameter_text
from sluice.jobs.kinds.training.start import start_training
from sluice.jobs.models import Job, JobKind
from sluice.jobs.workflow_start import create_once, new_job_id
from sluice.request.access import resolve_trainer
from sluice.request.context import RequestContext
from sluice.request.validation import validation_failed
from sluice.settings import Settings, get_settings
from sluice.storage.keys import UPLOADS_PREFIX, checkpoint_prefix, parse_s3_uri, s3_uri, training_output_prefix

ROUTE = "POST /v1/training-jobs"
# Training data is uploaded for the purpose; async inputs and batch outputs are not training sets.
_READABLE = (UPLOADS_PREFIX,)


def submit_training(
    ctx: RequestContext, request: TrainingJobRequest, *, idempotency_key: str | None, lambda_context: Any = None
) -> tuple[Job, bool]:
    require_operator(ctx, ROUTE)
    idempotency.check_key(idempotency_key)
    settings = get_settings()
    caller = ctx.caller.identity
    trainer = resolve_trainer(ctx, request.trainer)
    problems = request_problems(request, trainer, settings)
    if problems:
        raise validation_failed(problems)
    instance_type = request.instance_type or trainer.instance_types[0]
    input_bucket, input_prefix = parse_s3_uri(request.input_prefix)
    check_location(caller, input_bucket, input_prefix, "input_prefix", _READABLE)
    check_callback_topic(
        caller, request.callback.sns_topic_arn if request.callback else None, "body.callback.sns_topic_arn"
    )
    check_input_exists(input_bucket, input_prefix)

    def create() -> str:
        job_id = new_job_id(caller=caller, route=ROUTE, key=idempotency_key)
        job = Job(
            job_id=job_id,
            caller=caller,
            kind=JobKind.TRAINING,
            model=request.trainer,
            input_location=request.input_prefix,
            output_location=s3_uri(settings.data_bucket, training_output_prefix(caller, job_id)),
            callback=request.callback,
            status=initial_status(instance_type),
            details=training_details(
                request,
                trainer,
                instance_type=instance_type,
                checkpoint_uri=s3_uri(settings.data_bucket, checkpoint_prefix(caller, job_id)),
            ),
        )
        job = create_once(job)
        start_training(job)
        return job_id

    job_id, replayed = idempotency.once(
        key=idempotency_key,
        caller=caller,
        route=ROUTE,
        payload=request.model_dump(mode="json", by_alias=True, exclude_none=True),
        create=create,
        lambda_context=lambda_context,
    )
    job = services.store().get(job_id)
    assert job is not None, job_id
    return job, replayed


def request_problems(request: TrainingJobRequest, trainer: TrainerEntry, settings: Settings) -> list[dict[str, str]]:
    """What the request asks beyond its trainer or the stack's limits, one entry per field (all at once)."""
    problems: list[dict[str, str]] = []

    def refuse(field: str, message: str) -> None:
        problems.append({"field": f"body.{field}", "message": message})

    if request.instance_type and request.instance_type not in trainer.instance_types:
        refuse(
            "instance_type",
            f"'{request.instance_type}' is not an instance type of trainer '{request.trainer}'; use one of "
            f"{', '.join(trainer.instance_types)}",
        )
    limits = (
        ("instance_count", request.instance_count, settings.training_max_instance_count, "instances per run"),
        ("max_attempts", request.max_attempts, settings.training_max_attempts, "attempts per run"),
        ("max_runtime_seconds", request.max_runtime_seconds, settings.training_max_runtime_seconds, "seconds"),
    )
    for field, value, limit, unit in limits:
        if value > limit:
            refuse(field, f"at most {limit} {unit} on this stack (got {value})")
    # The reaper counts a run stuck after one attempt's longest wait without a change (kinds.training.hooks).
    wait_limit = 2 * settings.training_max_runtime_seconds
    if request.max_wait_seconds is not None and request.max_wait_seconds > wait_limit:
        refuse(
            "max_wait_seconds",
            f"at most {wait_limit} seconds on this stack (twice TrainingMaxRuntimeSeconds; "
            f"got {request.max_wait_seconds})",
        )
    if request.registration and request.registration.metric not in trainer.metric_names():
        refuse(
            "register.metric",
            f"'{request.registration.metric}' is not a metric of trainer '{request.trainer}'; use one of "
            f"{', '.join(metric.name for metric in trainer.metric_definitions)}",
        )
    return problems


def training_details(
    request: TrainingJobRequest, trainer: TrainerEntry, *, instance_type: str, checkpoint_uri: str
) -> dict[str, Any]:
    """The run's facts on the job row, as kinds.training.start reads them, and its (empty) attempts."""
    position = trainer.instance_types.index(instance_type)
    details: dict[str, Any] = {
        "trainer": request.trainer,
        "image": trainer.image,
        "inference_image": trainer.inference_image or trainer.image,
        "metric_definitions": [{"Name": metric.name, "Regex": metric.regex} for metric in trainer.metric_definitions],
        "resume_metric": trainer.resume_metric,
        "checkpoint_metric": trainer.checkpoint_metric,
        # The trainer's defaults, then the request's: SageMaker takes every value as a string.
        "hyperparameters": {
            **trainer.hyperparameters,
            **{name: hyperparameter_text(value) for name, value in request.hyperparameters.items()},
        },
        "instance_type": instance_type,
        "instance_count": request.instance_count,
        # Tried in the trainer's order when SageMaker has no capacity for the current type.
        "fallback_instance_types": list(trainer.instance_types[position + 1 :]),
        "spot": request.spot,
        "max_runtime_seconds": request.max_runtime_seconds,
        "max_wait_seconds": max_wait_seconds(request),
        "max_attempts": request.max_attempts,
        # One location for every attempt: how a new attempt finds what the last one checkpointed.
        "checkpoint_uri": checkpoint_uri,
        "attempts": [],
    }
    if request.registration is not None:
        details["register"] = request.registration.model_dump(mode="json")
    return details


def max_wait_seconds(request: TrainingJobRequest) -> int | None:
    """Spot only. By default twice the runtime: as long again to wait for capacity as to train."""
    if not request.spot:
        return None
    if request.max_wait_seconds is not None:
        return request.max_wait_seconds
    return min(2 * request.max_runtime_seconds, MAX_SAGEMAKER_SECONDS)

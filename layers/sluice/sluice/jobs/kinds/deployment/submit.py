"""POST /v1/deployments (operators): check a deployment against its endpoint, resolve every default, take
the endpoint's lock, create the job, start its workflow.

Everything the state machine needs is written to the job row here (kinds.deployment.start builds the
execution input from the row alone), so a retried start sends the same input: the traffic weights of
each step, the bake, the guards and the autoscaling, each the request's value or the stack's default.
The new version is a SageMaker Model (model_name) or an Approved registry version (model_package_arn),
from which a Model named `<group>-v<version>-<short job id>` is created here. A new variant on an
instance type outside settings.batch_unapproved_instance_types waits for another operator's approval
(AWAITING_APPROVAL), as a batch job does. One deployment per endpoint: the lock (kinds.deployment.lock)
is taken before the job is created and given back if creating or starting it fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from botocore.exceptions import ClientError

from sluice import clients
from sluice.auth.roles import require_operator
from sluice.catalog.models import BedrockBackend, SageMakerBackend
from sluice.errors import (
    BackendMisconfigured,
    DeploymentInProgress,
    EndpointNotInService,
    ModelVersionNotApproved,
    RegistryVersionNotFound,
)
from sluice.jobs import idempotency, services
from sluice.jobs.callback_topics import check_callback_topic
from sluice.jobs.kinds.batch_transform.submit import initial_status
from sluice.jobs.kinds.deployment.lock import endpoint_locks
from sluice.jobs.kinds.deployment.models import DeploymentRequest, ResolvedAutoscaling, ResolvedGuards
from sluice.jobs.kinds.deployment.start import start_deployment
from sluice.jobs.models import Job, JobKind
from sluice.jobs.workflow_start import create_once, new_job_id
from sluice.providers.errors import from_client_error
from sluice.request.access import resolve_model
from sluice.request.context import RequestContext
from sluice.request.validation import validation_failed
from sluice.settings import Settings, get_settings
from sluice.telemetry import logger

ROUTE = "POST /v1/deployments"
APPROVED = "Approved"
MIN_LINEAR_STEP_PERCENT = 10
# SageMaker's longest Model and variant name.
_MAX_NAME = 63


@dataclass(frozen=True)
class EndpointFacts:
    """What DescribeEndpoint (and its EndpointConfig) say about the endpoint a deployment changes."""

    name: str
    arn: str
    config_name: str
    variant_names: tuple[str, ...]
    # The first current variant's, the new variant's defaults.
    instance_type: str | None
    instance_count: int


@dataclass(frozen=True)
class NewVersion:
    """The version to deploy: an existing SageMaker Model, or a registry version to create one from."""

    model_name: str | None = None
    model_arn: str | None = None
    package: dict[str, Any] | None = None

    @property
    def default_variant(self) -> str:
        if self.package is None:
            assert self.model_name
            return self.model_name
        group = self.package["ModelPackageGroupName"]
        suffix = f"-v{self.package['ModelPackageVersion']}"
        return group[: _MAX_NAME - len(suffix)] + suffix


def submit_deployment(
    ctx: RequestContext, request: DeploymentRequest, *, idempotency_key: str | None, lambda_context: Any = None
) -> tuple[Job, bool]:
    require_operator(ctx, ROUTE)
    idempotency.check_key(idempotency_key)
    settings = get_settings()
    caller = ctx.caller.identity
    backend = deployable_backend(ctx, request.model)
    problems, weights = request_problems(request, settings)
    if problems:
        raise validation_failed(problems)
    endpoint = describe_endpoint(backend.endpoint_name, request.model)
    version = new_version(request)
    variant_name = request.variant_name or version.default_variant
    instance_type = request.instance_type or endpoint.instance_type
    problems = endpoint_problems(request, endpoint, variant_name, instance_type)
    if problems:
        raise validation_failed(problems)
    assert instance_type is not None
    check_callback_topic(
        caller, request.callback.sns_topic_arn if request.callback else None, "body.callback.sns_topic_arn"
    )
    details: dict[str, Any] = {
        "endpoint_name": endpoint.name,
        "variant_name": variant_name,
        "instance_type": instance_type,
        "instance_count": request.instance_count or endpoint.instance_count,
        "strategy": request.strategy,
        "weights": weights,
        # ab keeps its split: nothing is promoted and the old variants stay.
        "promote": request.strategy != "ab",
        "bake_seconds": request.bake_seconds or settings.deployment_bake_seconds,
        "guards": resolved_guards(request, settings).model_dump(),
        "autoscaling": resolved_autoscaling(request, settings).model_dump(),
        # Filled by the workflow, one StepRecord per traffic step.
        "steps": [],
    }

    def create() -> str:
        job_id = new_job_id(caller=caller, route=ROUTE, key=idempotency_key)
        locks = endpoint_locks()
        holder = locks.acquire(endpoint.name, job_id)
        if holder is not None:
            raise in_progress(endpoint.name, request.model, holder)
        try:
            job = create_once(
                Job(
                    job_id=job_id,
                    caller=caller,
                    kind=JobKind.DEPLOYMENT,
                    model=request.model,
                    input_location=version.model_arn or request.model_package_arn or "",
                    output_location=endpoint.arn,
                    callback=request.callback,
                    status=initial_status(instance_type),
                    details={**details, **version_details(version, job_id, settings)},
                )
            )
            start_deployment(job)
        except Exception:
            # No job holds the endpoint unless it runs: the next deployment must not wait for this one.
            locks.release(endpoint.name, job_id)
            raise
        return job_id

    job_id, replayed = idempotency.once(
        key=idempotency_key,
        caller=caller,
        route=ROUTE,
        payload=request.model_dump(mode="json", exclude_none=True),
        create=create,
        lambda_context=lambda_context,
    )
    job = services.store().get(job_id)
    assert job is not None, job_id
    if not replayed:
        logger.info(
            "deployment requested",
            extra={
                "audit": "deployment",
                "who": caller,
                "what": "deploy",
                "why": f"{request.strategy} of {job.details['model_name']} onto {endpoint.name}",
                "job_id": job_id,
                "endpoint_name": endpoint.name,
                "weights": weights,
            },
        )
    return job, replayed


def deployable_backend(ctx: RequestContext, model: str) -> SageMakerBackend:
    """The entry's SageMaker real-time endpoint; 422 body.model saying why another backend cannot be."""
    entry = resolve_model(ctx, model, asynchronous=True)
    backend = entry.backend
    reason = None
    if isinstance(backend, BedrockBackend):
        reason = "is served by Amazon Bedrock; deployments change SageMaker real-time endpoints only"
    elif backend.async_endpoint:
        reason = (
            f"runs on the SageMaker asynchronous endpoint '{backend.endpoint_name}'; deployments change "
            "real-time endpoints only"
        )
    elif backend.target_model:
        reason = f"is a model of the multi-model endpoint '{backend.endpoint_name}'; its variants serve many models"
    elif backend.inference_component_name:
        reason = f"is served by inference component '{backend.inference_component_name}', not a production variant"
    elif backend.target_variant:
        reason = (
            f"pins variant '{backend.target_variant}' of endpoint '{backend.endpoint_name}'; deploy through an "
            "entry that sends traffic by the variants' weights"
        )
    if reason:
        raise validation_failed([{"field": "body.model", "message": f"Model '{model}' {reason}"}])
    assert isinstance(backend, SageMakerBackend)
    return backend


def request_problems(request: DeploymentRequest, settings: Settings) -> tuple[list[dict[str, str]], list[float]]:
    """What the request asks that cannot be, one entry per field (all at once), and the step weights."""
    problems: list[dict[str, str]] = []

    def refuse(field: str, message: str) -> None:
        problems.append({"field": f"body.{field}", "message": message})

    if request.approved_by is not None:
        refuse(
            "approved_by",
            "is not accepted: a deployment whose instance type needs an approval waits (AWAITING_APPROVAL) "
            "until another operator decides it through /v1/approvals.",
        )
    for field, strategy in (("steps", "canary"), ("linear_step_percent", "linear"), ("split_percent", "ab")):
        if getattr(request, field) is not None and request.strategy != strategy:
            refuse(field, f"applies to strategy '{strategy}' only (this request's strategy is '{request.strategy}')")
    if request.linear_step_percent is not None and request.linear_step_percent < MIN_LINEAR_STEP_PERCENT:
        # SageMaker's own linear steps are 10-50%; smaller ones would make a plan of hundreds of steps.
        refuse("linear_step_percent", f"at least {MIN_LINEAR_STEP_PERCENT} percent (at most 10 steps)")
        return problems, []
    weights = step_weights(request, settings)
    if request.strategy == "canary":
        message = canary_problem(weights)
        if message:
            refuse("steps", message + ("" if request.steps else " (the stack's DeploymentCanarySteps)"))
    autoscaling = resolved_autoscaling(request, settings)
    if autoscaling.min > autoscaling.max:
        refuse(
            "autoscaling",
            f"min ({autoscaling.min}) is above max ({autoscaling.max}); a left-out bound is the stack's "
            "AutoscalingMin/AutoscalingMax",
        )
    return problems, weights


def step_weights(request: DeploymentRequest, settings: Settings) -> list[float]:
    """The new version's share of traffic at each step, in percent."""
    if request.strategy == "canary":
        return [float(weight) for weight in (request.steps or settings.deployment_canary_steps)]
    if request.strategy == "linear":
        step = request.linear_step_percent or settings.deployment_linear_step_percent
        weights: list[float] = []
        while round(step * (len(weights) + 1), 6) < 100:
            weights.append(round(step * (len(weights) + 1), 6))
        return [*weights, 100.0]
    if request.strategy == "blue_green":
        return [100.0]
    return [float(request.split_percent or settings.deployment_ab_split_percent)]


def canary_problem(weights: list[float]) -> str | None:
    if any(not 0 < weight <= 100 for weight in weights):
        return f"every step must be above 0 and at most 100 percent (got {weights})"
    if any(later <= earlier for earlier, later in pairwise(weights)):
        return f"steps must rise (got {weights})"
    if weights[-1] != 100:
        return f"the last step must be 100, where the new version is promoted (got {weights})"
    return None


def resolved_guards(request: DeploymentRequest, settings: Settings) -> ResolvedGuards:
    given = request.guards
    return ResolvedGuards(
        error_rate_percent=_given(given.error_rate_percent, settings.guard_error_rate_percent),
        p99_latency_ms=_given(given.p99_latency_ms, settings.guard_p99_latency_ms),
        low_confidence_percent=_given(given.low_confidence_percent, settings.guard_low_confidence_percent),
        min_invocations=_given(given.min_invocations, settings.guard_min_invocations),
        consecutive_breaches=_given(given.consecutive_breaches, settings.guard_consecutive_breaches),
    )


def resolved_autoscaling(request: DeploymentRequest, settings: Settings) -> ResolvedAutoscaling:
    given = request.autoscaling
    return ResolvedAutoscaling(
        min=_given(given.min, settings.autoscaling_min),
        max=_given(given.max, settings.autoscaling_max),
        target_invocations_per_instance=_given(
            given.target_invocations_per_instance, settings.autoscaling_target_invocations
        ),
        scale_in_cooldown=_given(given.scale_in_cooldown, settings.autoscaling_scale_in_cooldown),
        scale_out_cooldown=_given(given.scale_out_cooldown, settings.autoscaling_scale_out_cooldown),
    )


def _given(value: Any, default: Any) -> Any:
    # 0 is a real value for the cooldowns and the error rate: only a left-out field takes the default.
    return default if value is None else value


def describe_endpoint(name: str, model: str) -> EndpointFacts:
    """422 for an endpoint that does not exist, 409 for one that is not InService (it is being changed)."""
    sagemaker = clients.get("sagemaker")
    try:
        endpoint = sagemaker.describe_endpoint(EndpointName=name)
    except ClientError as exc:
        if _not_found(exc):
            raise validation_failed(
                [
                    {
                        "field": "body.model",
                        "message": f"Model '{model}' is served by endpoint '{name}', which does not exist in "
                        "SageMaker; a deployment changes an existing endpoint",
                    }
                ]
            ) from None
        raise from_client_error("sagemaker", exc) from exc
    status = endpoint.get("EndpointStatus", "")
    if status != "InService":
        raise EndpointNotInService(
            f"Endpoint '{name}' of model '{model}' is {status}; a deployment starts only on an InService "
            "endpoint. Retry once SageMaker finished its current change.",
            param="model",
            details={"endpoint_name": name, "endpoint_status": status},
        )
    variants = endpoint.get("ProductionVariants") or []
    try:
        config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    except ClientError as exc:
        raise from_client_error("sagemaker", exc) from exc
    configured = {item["VariantName"]: item for item in config.get("ProductionVariants", [])}
    first = variants[0] if variants else next(iter(configured.values()), {})
    first_config = configured.get(first.get("VariantName", ""), {})
    count = first.get("CurrentInstanceCount") or first_config.get("InitialInstanceCount") or 1
    return EndpointFacts(
        name=name,
        arn=endpoint["EndpointArn"],
        config_name=endpoint["EndpointConfigName"],
        variant_names=tuple(dict.fromkeys([*(v["VariantName"] for v in variants), *configured])),
        instance_type=first_config.get("InstanceType"),
        instance_count=int(count),
    )


def endpoint_problems(
    request: DeploymentRequest, endpoint: EndpointFacts, variant_name: str, instance_type: str | None
) -> list[dict[str, str]]:
    problems: list[dict[str, str]] = []
    if variant_name in endpoint.variant_names:
        problems.append(
            {
                "field": "body.variant_name",
                "message": f"endpoint '{endpoint.name}' already has a variant '{variant_name}'"
                + ("" if request.variant_name else " (the default, from the new version's name)")
                + "; give a variant_name it does not have",
            }
        )
    if instance_type is None:
        problems.append(
            {
                "field": "body.instance_type",
                "message": f"endpoint '{endpoint.name}''s first variant has no instance type (serverless); give one",
            }
        )
    return problems


def new_version(request: DeploymentRequest) -> NewVersion:
    """The Model to deploy exists (422 body.model_name), or the registry version is Approved (404 unknown,
    409 any other status)."""
    sagemaker = clients.get("sagemaker")
    if request.model_name:
        try:
            model = sagemaker.describe_model(ModelName=request.model_name)
        except ClientError as exc:
            if _not_found(exc):
                raise validation_failed(
                    [
                        {
                            "field": "body.model_name",
                            "message": f"SageMaker has no Model '{request.model_name}'; create it first, or "
                            "deploy a registry version with model_package_arn",
                        }
                    ]
                ) from None
            raise from_client_error("sagemaker", exc) from exc
        return NewVersion(model_name=request.model_name, model_arn=model.get("ModelArn"))
    arn = request.model_package_arn
    assert arn
    try:
        package = sagemaker.describe_model_package(ModelPackageName=arn)
    except ClientError as exc:
        if _not_found(exc):
            raise RegistryVersionNotFound(
                f"Model package version '{arn}' does not exist. GET /v1/registry/{{group}} lists a group's versions.",
                param="body.model_package_arn",
            ) from None
        raise from_client_error("sagemaker", exc) from exc
    status = package.get("ModelApprovalStatus") or "PendingManualApproval"
    if status != APPROVED:
        group, version = package.get("ModelPackageGroupName", ""), package.get("ModelPackageVersion", "")
        raise ModelVersionNotApproved(
            f"Model package version {version} of group '{group}' is {status}; only an Approved version is "
            f"deployed (POST /v1/registry/{group}/versions/{version}/approve).",
            param="body.model_package_arn",
            details={"approval_status": status},
        )
    containers = (package.get("InferenceSpecification") or {}).get("Containers") or []
    if not containers or not containers[0].get("Image"):
        raise validation_failed(
            [{"field": "body.model_package_arn", "message": "the version names no inference container image"}]
        )
    return NewVersion(package=package)


def version_details(version: NewVersion, job_id: str, settings: Settings) -> dict[str, Any]:
    """The Model the workflow deploys; a registry version's is created now (safe to repeat: named by job)."""
    if version.package is None:
        return {"model_name": version.model_name}
    package = version.package
    name = package_model_name(package["ModelPackageGroupName"], package["ModelPackageVersion"], job_id)
    create_package_model(name, package, settings)
    return {
        "model_name": name,
        "model_package_arn": package["ModelPackageArn"],
        # Created by Sluice for this deployment (the workflow may delete it after a rollback).
        "model_created": True,
    }


def package_model_name(group: str, version: int, job_id: str) -> str:
    suffix = f"-v{version}-{job_id.removeprefix('job-')[:8]}"
    return group[: _MAX_NAME - len(suffix)] + suffix


def create_package_model(name: str, package: dict[str, Any], settings: Settings) -> None:
    if not settings.deployment_model_role_arn:
        raise BackendMisconfigured(
            "Deployments of registry versions are not configured on this stack "
            "(SLUICE_DEPLOYMENT_MODEL_ROLE_ARN is empty)."
        )
    container = package["InferenceSpecification"]["Containers"][0]
    primary = {"Image": container["Image"]}
    if container.get("ModelDataUrl"):
        primary["ModelDataUrl"] = container["ModelDataUrl"]
    if container.get("Environment"):
        primary["Environment"] = container["Environment"]
    try:
        clients.get("sagemaker").create_model(
            ModelName=name, PrimaryContainer=primary, ExecutionRoleArn=settings.deployment_model_role_arn
        )
    except ClientError as exc:
        error = exc.response.get("Error", {})
        # A retried submission (the same job id) finds the Model its first attempt created.
        if "already exist" not in error.get("Message", ""):
            raise from_client_error("sagemaker", exc) from exc
    logger.info(
        "model created from a registry version",
        extra={"model_name": name, "model_package_arn": package["ModelPackageArn"]},
    )


def in_progress(endpoint: str, model: str, holder: str) -> DeploymentInProgress:
    return DeploymentInProgress(
        f"Endpoint '{endpoint}' (model '{model}') is being changed by deployment {holder or 'another request'}; "
        "one deployment per endpoint at a time. Retry once it has finished.",
        param="model",
        details={"endpoint_name": endpoint, "job_id": holder},
    )


def _not_found(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    message = error.get("Message", "").lower()
    return error.get("Code") in {"ValidationException", "ResourceNotFound", "ResourceNotFoundException"} and any(
        words in message for words in ("could not find", "not found", "does not exist")
    )

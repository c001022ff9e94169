"""The endpoint changes a deployment makes, each audited, and the check that the endpoint really runs them.

- add: a new EndpointConfig `<endpoint>-<job>-canary` holding the baseline variants as they serve now and
  the new version at weight 0, then UpdateEndpoint;
- shift: UpdateEndpointWeightsAndCapacities, the new version at the step's percent and the baseline
  variants sharing the rest in their recorded proportions (instance counts stay: only DesiredWeight);
- promote: once the new version serves 100%, a config `<endpoint>-<job>-promoted` with it alone, then
  UpdateEndpoint (the old variants' autoscaling detached first: SageMaker refuses otherwise);
- roll back: back to the EndpointConfig recorded at the start (weights only, when it still runs it);
- check: InService, the expected EndpointConfig and every variant's share within WEIGHT_TOLERANCE points;
  anything else after an update that reported success is a silent rollback (SilentRollback).

An endpoint still Updating refuses a new update (EndpointBusy, which the task retries every
DeploymentEndpointPollSeconds).
"""

from __future__ import annotations

from typing import Any, Literal

from botocore.exceptions import ClientError
from pydantic import BaseModel

from sluice.jobs.kinds.deployment import autoscaling
from sluice.jobs.kinds.deployment.audit import audit
from sluice.jobs.kinds.deployment.models import DeploymentExecutionInput
from sluice.jobs.kinds.deployment.plan import BaselineVariant, sagemaker_call

# Points of traffic share a variant may differ from what was asked (SageMaker's weights are floats).
WEIGHT_TOLERANCE = 0.5
BUSY = frozenset({"Creating", "Updating", "SystemUpdating", "RollingBack", "UpdateRollbackFailed"})
Then = Literal["shift", "bake", "autoscale", "finish"]


class EndpointBusy(Exception):
    """The endpoint is still applying an earlier update: retried after DeploymentEndpointPollSeconds."""


class SilentRollback(Exception):
    """The endpoint reports InService but does not run what the last update asked for."""


class EndpointUpdateFailed(Exception):
    """SageMaker could not apply the update (the endpoint is Failed or OutOfService)."""


class Expected(BaseModel):
    """What the endpoint must run once the update is applied ($.update), and what the workflow does then."""

    endpoint_config: str
    # Traffic share per variant, in percent.
    weights: dict[str, float]
    then: Then
    step: int = 0


class EndpointState(BaseModel):
    """One check of the endpoint ($.check)."""

    # in_service: runs the expected config; updating: not yet; rollback_requested: cancelled or asked.
    state: Literal["in_service", "updating", "rollback_requested"]
    status: str
    endpoint_config: str
    weights: dict[str, float]


def baseline_of(details: dict[str, Any]) -> list[BaselineVariant]:
    return [BaselineVariant.model_validate(item) for item in details.get("baseline_variants") or []]


def shares(weights: dict[str, float]) -> dict[str, float]:
    """Relative weights as percent of traffic."""
    total = sum(weights.values())
    if total <= 0:
        return dict.fromkeys(weights, 0.0)
    return {name: round(weight * 100 / total, 3) for name, weight in weights.items()}


def step_weights(baseline: list[BaselineVariant], canary: str, percent: float) -> dict[str, float]:
    """The new version at `percent`; the baseline variants share the rest in their recorded proportions."""
    total = sum(variant.weight for variant in baseline)
    weights = {}
    for variant in baseline:
        part = variant.weight / total if total > 0 else 1 / len(baseline)
        weights[variant.name] = round((100 - percent) * part, 3)
    weights[canary] = float(percent)
    return weights


def live_weights(described: dict[str, Any]) -> dict[str, float]:
    return {
        variant["VariantName"]: float(variant.get("CurrentWeight", variant.get("DesiredWeight", 0.0)))
        for variant in described.get("ProductionVariants") or []
    }


def _describe(sagemaker: Any, endpoint_name: str) -> dict[str, Any]:
    return sagemaker_call(sagemaker.describe_endpoint, EndpointName=endpoint_name)


def _ready(sagemaker: Any, endpoint_name: str) -> dict[str, Any]:
    described = _describe(sagemaker, endpoint_name)
    if described.get("EndpointStatus") in BUSY:
        raise EndpointBusy(
            f"Endpoint {endpoint_name} is {described['EndpointStatus']}: its last update is still applied."
        )
    return described


def _variant(variant: BaselineVariant) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "VariantName": variant.name,
        "ModelName": variant.model_name,
        "InitialVariantWeight": variant.weight,
        "InitialInstanceCount": variant.instance_count or 1,
    }
    if variant.instance_type:
        spec["InstanceType"] = variant.instance_type
    return spec


def _create_config(sagemaker: Any, name: str, variants: list[dict[str, Any]], job: DeploymentExecutionInput) -> None:
    try:
        sagemaker_call(
            sagemaker.create_endpoint_config,
            EndpointConfigName=name,
            ProductionVariants=variants,
            Tags=[{"Key": "sluice:job-id", "Value": job.job_id}],
        )
    except ClientError as exc:
        # An earlier try of this step created it (the name is this job's alone).
        if "already exist" not in str(exc) and exc.response.get("Error", {}).get("Code") != "ResourceInUse":
            raise


def new_variant(job: DeploymentExecutionInput) -> BaselineVariant:
    return BaselineVariant(
        name=job.variant_name,
        model_name=job.model_name,
        weight=0.0,
        instance_type=job.instance_type,
        instance_count=job.instance_count,
    )


def add_new_version(sagemaker: Any, job: DeploymentExecutionInput, details: dict[str, Any]) -> Expected:
    baseline = baseline_of(details)
    name = details["canary_endpoint_config"]
    described = _ready(sagemaker, job.endpoint_name)
    if described.get("EndpointConfigName") != name:
        variants = [_variant(variant) for variant in baseline] + [_variant(new_variant(job))]
        _create_config(sagemaker, name, variants, job)
        sagemaker_call(sagemaker.update_endpoint, EndpointName=job.endpoint_name, EndpointConfigName=name)
    audit(
        "new version added at weight 0",
        why=f"deployment {job.job_id} ({job.strategy}) of {job.model_name}",
        endpoint_name=job.endpoint_name,
        endpoint_config=name,
        variant=job.variant_name,
        job_id=job.job_id,
    )
    weights = shares({variant.name: variant.weight for variant in baseline} | {job.variant_name: 0.0})
    return Expected(endpoint_config=name, weights=weights, then="shift", step=0)


def shift_traffic(sagemaker: Any, job: DeploymentExecutionInput, details: dict[str, Any], step: int) -> Expected:
    percent = job.weights[step]
    weights = step_weights(baseline_of(details), job.variant_name, percent)
    _ready(sagemaker, job.endpoint_name)
    sagemaker_call(
        sagemaker.update_endpoint_weights_and_capacities,
        EndpointName=job.endpoint_name,
        DesiredWeightsAndCapacities=[
            {"VariantName": name, "DesiredWeight": weight} for name, weight in weights.items()
        ],
    )
    audit(
        "traffic shifted",
        why=f"step {step + 1} of {len(job.weights)} of deployment {job.job_id}: the new version at {percent:g}%",
        endpoint_name=job.endpoint_name,
        weights=weights,
        job_id=job.job_id,
    )
    return Expected(endpoint_config=details["canary_endpoint_config"], weights=shares(weights), then="bake", step=step)


def promote(
    sagemaker: Any, scaling: Any, job: DeploymentExecutionInput, details: dict[str, Any], step: int
) -> Expected:
    name = details["promoted_endpoint_config"]
    described = _ready(sagemaker, job.endpoint_name)
    if described.get("EndpointConfigName") != name:
        for variant in baseline_of(details):
            autoscaling.detach(
                scaling, job.endpoint_name, variant.name, why=f"variant {variant.name} is removed by the promotion"
            )
        promoted = new_variant(job).model_copy(update={"weight": 1.0})
        _create_config(sagemaker, name, [_variant(promoted)], job)
        sagemaker_call(sagemaker.update_endpoint, EndpointName=job.endpoint_name, EndpointConfigName=name)
    audit(
        "new version promoted",
        why=f"deployment {job.job_id} passed its last step's guards; the old variants are removed",
        endpoint_name=job.endpoint_name,
        endpoint_config=name,
        variant=job.variant_name,
        job_id=job.job_id,
    )
    return Expected(endpoint_config=name, weights={job.variant_name: 100.0}, then="autoscale", step=step)


def roll_back(
    sagemaker: Any, scaling: Any, job: DeploymentExecutionInput, details: dict[str, Any], *, why: str, who: str
) -> Expected:
    """Back to the recorded baseline: UpdateEndpoint to its EndpointConfig, or only its weights when the
    endpoint still runs that config (the failure came before the new version was added)."""
    baseline = baseline_of(details)
    name = details["baseline_endpoint_config"]
    wanted = shares({variant.name: variant.weight for variant in baseline})
    described = _ready(sagemaker, job.endpoint_name)
    running = described.get("EndpointConfigName")
    if running != name:
        # The new version's variant goes away with it (scaled only after a promotion).
        autoscaling.detach(scaling, job.endpoint_name, job.variant_name, why="its variant is removed by the rollback")
        sagemaker_call(sagemaker.update_endpoint, EndpointName=job.endpoint_name, EndpointConfigName=name)
        action = f"UpdateEndpoint back to {name}"
    elif not _within(shares(live_weights(described)), wanted):
        sagemaker_call(
            sagemaker.update_endpoint_weights_and_capacities,
            EndpointName=job.endpoint_name,
            DesiredWeightsAndCapacities=[{"VariantName": v.name, "DesiredWeight": v.weight} for v in baseline],
        )
        action = "weights back to the baseline's"
    else:
        action = "nothing to change: the endpoint still runs the baseline"
    audit(
        "traffic rolled back",
        who=who,
        why=why,
        endpoint_name=job.endpoint_name,
        endpoint_config=name,
        action=action,
        job_id=job.job_id,
    )
    return Expected(endpoint_config=name, weights=wanted, then="finish")


def _within(found: dict[str, float], wanted: dict[str, float]) -> bool:
    if set(found) != set(wanted):
        return False
    return all(abs(found[name] - wanted[name]) <= WEIGHT_TOLERANCE for name in wanted)


def check_endpoint(sagemaker: Any, endpoint_name: str, expected: Expected) -> EndpointState:
    described = _describe(sagemaker, endpoint_name)
    status = described.get("EndpointStatus", "")
    config = described.get("EndpointConfigName", "")
    weights = shares(live_weights(described))
    if status in BUSY:
        return EndpointState(state="updating", status=status, endpoint_config=config, weights=weights)
    if status != "InService":
        reason = described.get("FailureReason") or "no reason given"
        raise EndpointUpdateFailed(f"Endpoint {endpoint_name} is {status} after the update: {reason}")
    if config != expected.endpoint_config or not _within(weights, expected.weights):
        raise SilentRollback(
            f"Endpoint {endpoint_name} is InService but runs {config} with traffic {_words(weights)}, not "
            f"{expected.endpoint_config} with {_words(expected.weights)}: the update was rolled back silently."
        )
    return EndpointState(state="in_service", status=status, endpoint_config=config, weights=weights)


def _words(weights: dict[str, float]) -> str:
    return ", ".join(f"{name} {share:g}%" for name, share in sorted(weights.items())) or "no variants"

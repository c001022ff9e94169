"""The deployment workflow tests' world: the jobs stack of tests/workflow_support (template.yaml in an
in-process moto, the real ASL run by moto's interpreter, the real handlers in-process) with the deployment
waits at their minimum, SageMaker endpoints created in moto, and per-variant metrics scripted per guard reading.

moto is adjusted in-process where it lacks what AWS does, or where the tests steer it; each deviation said
here (the local mode's own versions live in local/ and may later replace these):

- UpdateEndpoint: moto has none. Here it moves the endpoint to the new EndpointConfig's variants (weights of
  0 kept, instance counts from the config), refuses an endpoint that is still Updating (ValidationException,
  as AWS does), and refuses to remove or change a variant that has an Application Auto Scaling target
  registered (AWS: "... has autoscaling policies attached"). `silent_rollback` endpoints accept the update
  and stay on their old config, as SageMaker does when an update fails and is rolled back.
- UpdateEndpointWeightsAndCapacities: moto blanks the instance counts a weights-only call leaves out; here
  they are kept, as on AWS.
- Updating: moto is InService at once. After each update an endpoint answers `Updating` to the next
  `updating_checks` DescribeEndpoint calls, then InService.
- Metrics: each GetMetricData about a scripted endpoint plays the next `Reading` (the last repeats): the
  endpoint's earlier data points are removed and the reading's are put, per variant (SageMaker's Invocations,
  Invocation5XXErrors, ModelLatency in microseconds; Sluice's Predictions and LowConfidencePredictions with
  service/model/provider/variant), so every guard reading sees exactly its own window. The namespace scoping
  and p99 are the embedded CloudWatch's (local/sluice_local/metric_queries.py, installed by start_moto).
- `update_errors` make UpdateEndpoint answer errors (code, message), one per call; `on_reading` runs a test's
  action (a cancel, a rollback request) at the n-th guard reading of an endpoint.
- Application Auto Scaling: moto stores targets and policies (nothing scales); `attach_errors` make
  PutScalingPolicy answer an error.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from tests import workflow_support
from tests.workflow_support import ACCOUNT, REGION, JobsStack, jobs_stack

DEPLOYMENT_PARAMETERS = {
    "DeploymentGuardIntervalSeconds": "1",
    "DeploymentMaxBakeExtensions": "2",
    "DeploymentEndpointPollSeconds": "1",
    "DeploymentEndpointMaxPolls": "3",
}
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


@dataclass
class Traffic:
    """What one variant served in one guard window."""

    invocations: int = 100
    errors: int = 0
    latency_ms: float = 40.0
    low_confidence: int = 0
    # Answers whose confidence was read (default: every answer that was not an error).
    predictions: int | None = None


Reading = dict[str, Traffic]


@dataclass
class EndpointWorld:
    readings: dict[str, list[Reading]] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    played: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    updating_checks: int = 0
    pending: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    silent_rollback: set[str] = field(default_factory=set)
    update_errors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    attach_errors: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    on_reading: dict[str, dict[int, Callable[[], Any]]] = field(default_factory=dict)
    # Every UpdateEndpoint and weights update, in order: (endpoint, "config" | "weights", what).
    updates: list[tuple[str, str, Any]] = field(default_factory=list)

    def install(self, patcher: pytest.MonkeyPatch) -> None:
        from moto.applicationautoscaling.models import ApplicationAutoscalingBackend, applicationautoscaling_backends
        from moto.cloudwatch.models import CloudWatchBackend
        from moto.core.exceptions import JsonRESTError
        from moto.core.responses import ActionResult
        from moto.sagemaker.models import SageMakerModelBackend
        from moto.sagemaker.responses import SageMakerResponse

        world = self
        weights_update = SageMakerModelBackend.update_endpoint_weights_and_capacities
        describe = SageMakerModelBackend.describe_endpoint
        metric_data = CloudWatchBackend.get_metric_data
        put_policy = ApplicationAutoscalingBackend.put_scaling_policy

        def scaled(endpoint_name: str, variant: str) -> bool:
            backend = applicationautoscaling_backends[ACCOUNT][REGION]
            resource = f"endpoint/{endpoint_name}/variant/{variant}"
            return bool(backend.describe_scalable_targets("sagemaker", [resource], SCALABLE_DIMENSION))

        def update_endpoint(backend: Any, endpoint_name: str, endpoint_config_name: str) -> str:
            endpoint = backend.endpoints.get(endpoint_name)
            if endpoint is None:
                raise JsonRESTError("ValidationException", f"Could not find endpoint {endpoint_name}.")
            if world.update_errors.get(endpoint_name):
                raise JsonRESTError(*world.update_errors[endpoint_name].pop(0))
            if world.pending[endpoint_name] > 0:
                raise JsonRESTError("ValidationException", f"Cannot update in-progress endpoint {endpoint.arn}.")
            config = backend.describe_endpoint_config(endpoint_config_name)
            current = {
                v["VariantName"]: v
                for v in backend.describe_endpoint_config(endpoint.endpoint_config_name)["ProductionVariants"]
            }
            wanted = {v["VariantName"]: v for v in config["ProductionVariants"]}
            for name, variant in current.items():
                changed = name not in wanted or any(
                    wanted[name].get(key) != variant.get(key) for key in ("ModelName", "InstanceType")
                )
                if changed and scaled(endpoint_name, name):
                    raise JsonRESTError(
                        "ValidationException",
                        f"The variant {name} of endpoint {endpoint_name} has autoscaling policies attached: "
                        "deregister them before removing or changing it.",
                    )
            world.updates.append((endpoint_name, "config", endpoint_config_name))
            world.pending[endpoint_name] = world.updating_checks
            if endpoint_name in world.silent_rollback:
                world.silent_rollback.discard(endpoint_name)
                return endpoint.arn
            endpoint.endpoint_config_name = endpoint_config_name
            endpoint.production_variants = [
                {
                    "VariantName": v["VariantName"],
                    "CurrentWeight": float(v.get("InitialVariantWeight", 1.0)),
                    "DesiredWeight": float(v.get("InitialVariantWeight", 1.0)),
                    "CurrentInstanceCount": v.get("InitialInstanceCount", 1),
                    "DesiredInstanceCount": v.get("InitialInstanceCount", 1),
                }
                for v in config["ProductionVariants"]
            ]
            return endpoint.arn

        def update_endpoint_response(response: Any) -> Any:
            arn = update_endpoint(
                response.sagemaker_backend,
                response._get_param("EndpointName"),
                response._get_param("EndpointConfigName"),
            )
            return ActionResult({"EndpointArn": arn})

        def update_weights(backend: Any, endpoint_name: str, desired_weights_and_capacities: list[dict]) -> str:
            endpoint = backend.endpoints.get(endpoint_name)
            counts = (
                {v["VariantName"]: v.get("CurrentInstanceCount") for v in endpoint.production_variants}
                if endpoint
                else {}
            )
            arn = weights_update(backend, endpoint_name, desired_weights_and_capacities)
            for variant in endpoint.production_variants:
                asked = (
                    next(d for d in desired_weights_and_capacities if d["VariantName"] == variant["VariantName"])
                    if any(d["VariantName"] == variant["VariantName"] for d in desired_weights_and_capacities)
                    else {}
                )
                if asked.get("DesiredInstanceCount") is None:
                    variant["CurrentInstanceCount"] = variant["DesiredInstanceCount"] = counts.get(
                        variant["VariantName"]
                    )
            world.updates.append(
                (
                    endpoint_name,
                    "weights",
                    {d["VariantName"]: d["DesiredWeight"] for d in desired_weights_and_capacities},
                )
            )
            world.pending[endpoint_name] = world.updating_checks
            return arn

        def describe_endpoint(backend: Any, endpoint_name: str) -> Any:
            endpoint = backend.endpoints.get(endpoint_name)
            if endpoint is not None:
                if world.pending[endpoint_name] > 0:
                    world.pending[endpoint_name] -= 1
                    endpoint.endpoint_status = "Updating"
                else:
                    endpoint.endpoint_status = "InService"
            return describe(backend, endpoint_name)

        def get_metric_data(backend: Any, queries: list[dict], start_time: Any, end_time: Any, **kwargs: Any) -> Any:
            endpoints = {
                d["Value"]
                for q in queries
                for d in (q.get("MetricStat") or {}).get("Metric", {}).get("Dimensions", [])
                if d["Name"] == "EndpointName"
            }
            for endpoint_name in endpoints & set(world.readings):
                world.play(backend, endpoint_name)
            return metric_data(backend, queries, start_time, end_time, **kwargs)

        def put_scaling_policy(
            backend: Any, policy_name: str, service_namespace: str, resource_id: str, *args: Any, **kw: Any
        ) -> Any:
            endpoint_name = resource_id.split("/")[1]
            if world.attach_errors.get(endpoint_name):
                raise JsonRESTError(*world.attach_errors[endpoint_name].pop(0))
            return put_policy(backend, policy_name, service_namespace, resource_id, *args, **kw)

        patcher.setattr(SageMakerModelBackend, "update_endpoint", update_endpoint, raising=False)
        patcher.setattr(SageMakerResponse, "update_endpoint", update_endpoint_response, raising=False)
        patcher.setattr(SageMakerModelBackend, "update_endpoint_weights_and_capacities", update_weights)
        patcher.setattr(SageMakerModelBackend, "describe_endpoint", describe_endpoint)
        patcher.setattr(CloudWatchBackend, "get_metric_data", get_metric_data)
        patcher.setattr(ApplicationAutoscalingBackend, "put_scaling_policy", put_scaling_policy)

    def play(self, backend: Any, endpoint_name: str) -> None:
        """The endpoint's next guard window: its earlier data points go, this reading's are put."""
        count = self.played[endpoint_name]
        self.played[endpoint_name] = count + 1
        hook = self.on_reading.get(endpoint_name, {}).pop(count, None)
        if hook is not None:
            hook()
        plays = self.readings[endpoint_name]
        reading = plays[min(count, len(plays) - 1)]
        model = self.models[endpoint_name]

        def mine(datum: Any) -> bool:
            return any(getattr(d, "value", None) in (endpoint_name, model) for d in datum.dimensions or [])

        backend.metric_data = [datum for datum in backend.metric_data if not mine(datum)]
        from moto.core.utils import utcnow

        # moto keeps naive UTC timestamps.
        at = utcnow() - timedelta(seconds=1)
        for variant, traffic in reading.items():
            sagemaker = [{"Name": "EndpointName", "Value": endpoint_name}, {"Name": "VariantName", "Value": variant}]
            sluice = [
                {"Name": "service", "Value": "sluice"},
                {"Name": "model", "Value": model},
                {"Name": "provider", "Value": "sagemaker"},
                {"Name": "variant", "Value": variant},
            ]
            predictions = (
                traffic.predictions if traffic.predictions is not None else traffic.invocations - traffic.errors
            )
            data = [
                {
                    "MetricName": "Invocations",
                    "Dimensions": sagemaker,
                    "Value": float(traffic.invocations),
                    "Timestamp": at,
                },
                {
                    "MetricName": "Invocation5XXErrors",
                    "Dimensions": sagemaker,
                    "Value": float(traffic.errors),
                    "Timestamp": at,
                },
            ]
            if traffic.invocations:
                data.append(
                    {
                        "MetricName": "ModelLatency",
                        "Dimensions": sagemaker,
                        "Values": [traffic.latency_ms * 1000],
                        "Counts": [traffic.invocations],
                        "Timestamp": at,
                        "Unit": "Microseconds",
                    }
                )
            backend.put_metric_data("AWS/SageMaker", data)
            backend.put_metric_data(
                "Sluice",
                [
                    {"MetricName": "Predictions", "Dimensions": sluice, "Value": float(predictions), "Timestamp": at},
                    {
                        "MetricName": "LowConfidencePredictions",
                        "Dimensions": sluice,
                        "Value": float(traffic.low_confidence),
                        "Timestamp": at,
                    },
                ],
            )


@dataclass
class DeploymentStack:
    jobs: JobsStack
    endpoints: EndpointWorld

    def __getattr__(self, name: str) -> Any:
        return getattr(self.jobs, name)


@contextmanager
def deployment_stack(stack_name: str, catalog: dict[str, Any]) -> Iterator[DeploymentStack]:
    patcher = pytest.MonkeyPatch()
    try:
        patcher.setattr(
            workflow_support, "TEST_PARAMETERS", {**workflow_support.TEST_PARAMETERS, **DEPLOYMENT_PARAMETERS}
        )
        with jobs_stack(stack_name, catalog) as stack:
            patcher.undo()
            world = EndpointWorld()
            steering = pytest.MonkeyPatch()
            world.install(steering)
            try:
                yield DeploymentStack(jobs=stack, endpoints=world)
            finally:
                steering.undo()
    finally:
        patcher.undo()

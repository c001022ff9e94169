"""SageMaker endpoint updates as AWS makes them, for the deployment workflow (moto 5.2 has no UpdateEndpoint, and
its UpdateEndpointWeightsAndCapacities blanks the instance counts a weights-only call leaves out).

- DescribeEndpoint always lists the ProductionVariants with CurrentWeight, DesiredWeight, CurrentInstanceCount
  and DesiredInstanceCount: from the endpoint config at creation (InitialVariantWeight defaults to 1.0, as on
  AWS; moto drops a weight of 0) and at each UpdateEndpoint, then from the weight updates.
- UpdateEndpoint (EndpointName, EndpointConfigName; RetainAllVariantProperties,
  ExcludeRetainedVariantProperties and DeploymentConfig are accepted and ignored): the endpoint is `Updating`
  for `update_seconds` (env SLUICE_LOCAL_ENDPOINT_UPDATE_SECONDS, default 1), still serving the old config
  (EndpointConfigName stays the old one; PendingDeploymentSummary names the new one, as on AWS), then
  `InService` with the new config and its variants.
- UpdateEndpointWeightsAndCapacities: changes only what each entry names (DesiredWeight and/or
  DesiredInstanceCount); the desired values show at once, the current ones (what routing uses) once the
  endpoint is back `InService` after the same moment.
- Either update while the endpoint is `Updating` is AWS's ValidationException "Cannot update in-progress
  endpoint".

The change lands lazily, at the first read after its moment (no timer threads). Installed by
`emulator.start_moto`; `install()` returns the undo.
"""

from __future__ import annotations

import copy
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

DEFAULT_UPDATE_SECONDS = 1.0
UPDATE_SECONDS_ENV = "SLUICE_LOCAL_ENDPOINT_UPDATE_SECONDS"
_lock = threading.RLock()


def update_seconds() -> float:
    return float(os.environ.get(UPDATE_SECONDS_ENV) or DEFAULT_UPDATE_SECONDS)


@dataclass
class _Pending:
    ready_at: float
    started: Any  # a datetime, for PendingDeploymentSummary.StartTime
    config_name: str | None = None  # UpdateEndpoint: the config the endpoint moves to
    variants: list[dict[str, Any]] = field(default_factory=list)  # the variants once it is InService


def variants_of(config: dict[str, Any]) -> list[dict[str, Any]]:
    """An endpoint config's production variants as DescribeEndpoint shows them once deployed."""
    shown = []
    for variant in config.get("ProductionVariants") or []:
        weight = variant.get("InitialVariantWeight")
        weight = 1.0 if weight is None else float(weight)
        item: dict[str, Any] = {"VariantName": variant["VariantName"], "CurrentWeight": weight, "DesiredWeight": weight}
        if variant.get("InitialInstanceCount") is not None:
            item["CurrentInstanceCount"] = item["DesiredInstanceCount"] = int(variant["InitialInstanceCount"])
        if variant.get("ServerlessConfig"):
            item["CurrentServerlessConfig"] = item["DesiredServerlessConfig"] = variant["ServerlessConfig"]
        shown.append(item)
    return shown


def install(patched_moto: str) -> Callable[[], None]:
    import moto as moto_package
    from moto.core.responses import ActionResult
    from moto.core.utils import utcnow
    from moto.sagemaker import models, responses
    from moto.sagemaker.exceptions import AWSValidationException

    if not moto_package.__version__.startswith(patched_moto):
        raise RuntimeError(
            f"sluice_local patches moto {patched_moto}x's SageMaker endpoints; "
            f"re-check it for moto {moto_package.__version__}"
        )
    backend_class, response_class = models.SageMakerModelBackend, responses.SageMakerResponse
    original = {
        name: getattr(backend_class, name)
        for name in ("create_endpoint", "describe_endpoint", "update_endpoint_weights_and_capacities", "list_endpoints")
    }
    # The endpoint's update in flight, beside moto's record of it (moto's response is built from its attributes).
    pending: weakref.WeakKeyDictionary[Any, _Pending] = weakref.WeakKeyDictionary()

    def settle(endpoint: Any) -> None:
        with _lock:
            change = pending.get(endpoint)
            if change is None or time.monotonic() < change.ready_at:
                return
            if change.config_name is not None:
                endpoint.endpoint_config_name = change.config_name
            endpoint.production_variants = change.variants
            endpoint.endpoint_status = "InService"
            endpoint.last_modified_time = utcnow()
            del pending[endpoint]

    def find(backend: Any, name: str) -> Any:
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            arn = models.FakeEndpoint.arn_formatter(name, backend.account_id, backend.region_name)
            raise AWSValidationException(f'Could not find endpoint "{arn}".')
        settle(endpoint)
        if endpoint.endpoint_status == "Updating":
            raise AWSValidationException(f'Cannot update in-progress endpoint "{endpoint.arn}".')
        return endpoint

    def begin(endpoint: Any, change: _Pending) -> None:
        pending[endpoint] = change
        endpoint.endpoint_status = "Updating"
        endpoint.last_modified_time = utcnow()

    def create_endpoint(backend: Any, endpoint_name: str, endpoint_config_name: str, tags: Any) -> Any:
        endpoint = original["create_endpoint"](backend, endpoint_name, endpoint_config_name, tags)
        endpoint.production_variants = variants_of(backend.describe_endpoint_config(endpoint_config_name))
        return endpoint

    def describe_endpoint(backend: Any, endpoint_name: str) -> dict[str, Any]:
        endpoint = backend.endpoints.get(endpoint_name)
        with _lock:
            if endpoint is not None:
                settle(endpoint)
            described = copy.deepcopy(original["describe_endpoint"](backend, endpoint_name))
            change = pending.get(endpoint) if endpoint is not None else None
        if change is not None and change.config_name is not None:
            described["PendingDeploymentSummary"] = {
                "EndpointConfigName": change.config_name,
                "ProductionVariants": [
                    {k: v for k, v in variant.items() if not k.startswith("Current")} for variant in change.variants
                ],
                "StartTime": change.started,
            }
        return described

    def list_endpoints(backend: Any, *args: Any, **kwargs: Any) -> Any:
        with _lock:
            for endpoint in list(backend.endpoints.values()):
                settle(endpoint)
        return original["list_endpoints"](backend, *args, **kwargs)

    def update_endpoint(backend: Any, endpoint_name: str, endpoint_config_name: str) -> str:
        with _lock:
            endpoint = find(backend, endpoint_name)
            try:
                config = backend.describe_endpoint_config(endpoint_config_name)
            except KeyError:
                arn = models.FakeEndpointConfig.arn_formatter(
                    endpoint_config_name, backend.account_id, backend.region_name
                )
                raise AWSValidationException(f'Could not find endpoint configuration "{arn}".') from None
            begin(
                endpoint,
                _Pending(time.monotonic() + update_seconds(), utcnow(), endpoint_config_name, variants_of(config)),
            )
            return endpoint.arn

    def update_endpoint_weights_and_capacities(
        backend: Any, endpoint_name: str, desired_weights_and_capacities: list[dict[str, Any]]
    ) -> str:
        with _lock:
            endpoint = find(backend, endpoint_name)
            variants = copy.deepcopy(endpoint.production_variants)
            by_name = {variant["VariantName"]: variant for variant in variants}
            seen: set[str] = set()
            for entry in desired_weights_and_capacities or []:
                name = entry.get("VariantName")
                if name in seen:
                    raise AWSValidationException(f'The variant name "{name}" was non-unique within the request.')
                seen.add(name)
                if name not in by_name:
                    raise AWSValidationException(
                        f'The variant name(s) "{name}" is/are not present within endpoint configuration '
                        f'"{endpoint.endpoint_config_name}".'
                    )
                if entry.get("DesiredWeight") is None and entry.get("DesiredInstanceCount") is None:
                    raise AWSValidationException(
                        f'Variant "{name}": specify at least one of DesiredWeight and DesiredInstanceCount.'
                    )
            # Desired values show at once, current ones once the update lands (settle).
            for entry in desired_weights_and_capacities or []:
                shown, target = (
                    next(v for v in endpoint.production_variants if v["VariantName"] == entry["VariantName"]),
                    by_name[entry["VariantName"]],
                )
                if entry.get("DesiredWeight") is not None:
                    shown["DesiredWeight"] = target["DesiredWeight"] = target["CurrentWeight"] = float(
                        entry["DesiredWeight"]
                    )
                if entry.get("DesiredInstanceCount") is not None:
                    count = int(entry["DesiredInstanceCount"])
                    shown["DesiredInstanceCount"] = target["DesiredInstanceCount"] = target["CurrentInstanceCount"] = (
                        count
                    )
            begin(endpoint, _Pending(time.monotonic() + update_seconds(), utcnow(), None, variants))
            return endpoint.arn

    def update_endpoint_action(response: Any) -> ActionResult:
        arn = response.sagemaker_backend.update_endpoint(
            endpoint_name=response._get_param("EndpointName"),
            endpoint_config_name=response._get_param("EndpointConfigName"),
        )
        return ActionResult({"EndpointArn": arn})

    backend_class.create_endpoint = create_endpoint
    backend_class.describe_endpoint = describe_endpoint
    backend_class.list_endpoints = list_endpoints
    backend_class.update_endpoint = update_endpoint
    backend_class.update_endpoint_weights_and_capacities = update_endpoint_weights_and_capacities
    had_action = "update_endpoint" in response_class.__dict__
    previous_action = response_class.__dict__.get("update_endpoint")
    response_class.update_endpoint = update_endpoint_action

    def undo() -> None:
        for name, method in original.items():
            setattr(backend_class, name, method)
        del backend_class.update_endpoint
        if had_action:
            response_class.update_endpoint = previous_action
        else:
            del response_class.update_endpoint

    return undo

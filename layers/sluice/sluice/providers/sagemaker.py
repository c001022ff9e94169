"""SageMaker real-time endpoints: InvokeEndpoint with TargetModel, TargetVariant, inference components."""

from __future__ import annotations

import time

from sluice import clients
from sluice.catalog.models import SageMakerBackend
from sluice.providers.errors import translate_errors
from sluice.providers.result import BackendResult

SERVICE = "sagemaker-runtime"


def invoke_endpoint(
    backend: SageMakerBackend,
    body: bytes,
    content_type: str,
    timeout_seconds: float,
    target_variant: str | None = None,
) -> BackendResult:
    """`target_variant` pins a production variant for this request, overriding the catalog's."""
    params: dict[str, str | bytes] = {
        "EndpointName": backend.endpoint_name,
        "Body": body,
        "ContentType": content_type,
        "Accept": backend.accept,
    }
    optional = {
        "TargetModel": backend.target_model,
        "TargetVariant": target_variant or backend.target_variant,
        "InferenceComponentName": backend.inference_component_name,
    }
    params.update({key: value for key, value in optional.items() if value})
    client = clients.get(SERVICE, timeout_seconds)
    started = time.perf_counter()
    with translate_errors("sagemaker"):
        response = client.invoke_endpoint(**params)
        payload = response["Body"].read()
    return BackendResult(
        body=payload,
        content_type=response.get("ContentType", backend.accept),
        backend_latency_ms=(time.perf_counter() - started) * 1000,
        variant=response.get("InvokedProductionVariant"),
    )

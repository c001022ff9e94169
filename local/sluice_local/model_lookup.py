"""Which local model process serves a SageMaker model, for transform jobs and endpoint invocations.

A model's container (PrimaryContainer, else Containers[0]; a ModelPackageName in it stands for that package's
first inference container) is served by:

- the sample model process of its `SLUICE_MODEL_VERSION` environment variable (v1, v2: the platform's
  sample endpoint; `degraded`: the model that must be rolled back); else
- a process on its ModelDataUrl (a trained model.tar.gz, artifacts.TrainedModels) when its image is one local
  mode can play (INFERENCE_IMAGES); else nothing: the model is not served locally.

An endpoint's production variant is served by its model's process; a variant whose model is not served
falls back to the sample process named like the variant (v1, v2), as before trained models were served.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from sluice_local.artifacts import TrainedModels
from sluice_local.sagemaker_runtime import Variant

log = logging.getLogger("sluice_local.model_lookup")

# Images whose model data local mode can serve: the iris inference container (models/iris/serve.py).
INFERENCE_IMAGES = frozenset({"sluice/iris:local"})
# A model's resolution is reused this long: endpoint invocations would otherwise describe every variant's
# model on every call. SageMaker models are immutable; only a delete and re-create under the same name
# takes up to this long to show.
CACHE_SECONDS = 2.0


@dataclass
class ModelLookup:
    sagemaker: Any  # a boto3 SageMaker client on the embedded AWS
    versions: dict[str, str]  # SLUICE_MODEL_VERSION -> URL of its sample model process
    trained: TrainedModels
    _cache: dict[str, tuple[float, str | None]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def model_url(self, model_name: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(model_name)
        if cached is not None and cached[0] > now:
            return cached[1]
        url = self._resolve(model_name)
        with self._lock:
            self._cache[model_name] = (now + CACHE_SECONDS, url)
        return url

    def variants(self, endpoint_name: str) -> list[Variant] | None:
        """The endpoint's variants with the URLs serving them; None when there is no such endpoint.

        Weighted by the live weights (DescribeEndpoint's CurrentWeight, which weight updates change), else by
        the config's InitialVariantWeight (an endpoint described without weights)."""
        try:
            endpoint = self.sagemaker.describe_endpoint(EndpointName=endpoint_name)
        except ClientError:
            return None
        live = {
            v["VariantName"]: v["CurrentWeight"]
            for v in endpoint.get("ProductionVariants") or []
            if "CurrentWeight" in v
        }
        # Read on every call, so an endpoint update changes routing as soon as it is InService.
        config = self.sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
        served = []
        for variant in config["ProductionVariants"]:
            url = self.model_url(variant["ModelName"]) if variant.get("ModelName") else None
            if url is None:
                url = self.versions.get(variant["VariantName"])
            if url is not None:
                weight = live.get(variant["VariantName"], variant.get("InitialVariantWeight", 1.0))
                served.append(Variant(variant["VariantName"], float(weight), url))
        return served

    def _resolve(self, model_name: str) -> str | None:
        try:
            model = self.sagemaker.describe_model(ModelName=model_name)
        except ClientError:
            return None
        container = model.get("PrimaryContainer") or next(iter(model.get("Containers") or []), {})
        version = (container.get("Environment") or {}).get("SLUICE_MODEL_VERSION")
        if version in self.versions:
            return self.versions[version]
        if container.get("ModelPackageName"):
            container = self._package_container(container["ModelPackageName"])
        data, image = container.get("ModelDataUrl"), container.get("Image")
        if data and image in INFERENCE_IMAGES:
            return self.trained.url(data)
        if data:
            log.warning(
                "model %s: local mode cannot play its image %r (it plays %s)", model_name, image, INFERENCE_IMAGES
            )
        return None

    def _package_container(self, package: str) -> dict[str, Any]:
        try:
            described = self.sagemaker.describe_model_package(ModelPackageName=package)
        except ClientError:
            return {}
        return next(iter((described.get("InferenceSpecification") or {}).get("Containers") or []), {})

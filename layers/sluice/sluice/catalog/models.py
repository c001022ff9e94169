"""The catalog document: logical model names mapped to their backend, limits, prices and audience.

Platform teams edit it as JSON (README: "The model catalog"); pydantic validates it on load so a
mistake is reported with the path of the offending field.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from sluice.inference.confidence import Steps, compile_path

ModelName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]
Task = Literal["chat", "embedding", "predict"]


class _Strict(BaseModel):
    # Unknown keys are typos in a hand-edited document: refuse them rather than ignore them.
    model_config = ConfigDict(extra="forbid", frozen=True)


class BedrockBackend(_Strict):
    provider: Literal["bedrock"]
    model_id: str = Field(min_length=1, description="Model id, inference profile id, or either's ARN")
    # How /v1/embeddings shapes the InvokeModel body for this model.
    embedding_format: Literal["titan-v2", "cohere"] | None = None

    @property
    def target(self) -> dict[str, Any]:
        return {"model_id": self.model_id}


class SageMakerBackend(_Strict):
    provider: Literal["sagemaker"]
    endpoint_name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
    target_model: str | None = Field(default=None, min_length=1, description="Multi-model endpoint artifact")
    target_variant: str | None = Field(default=None, min_length=1)
    inference_component_name: str | None = Field(default=None, min_length=1)
    content_type: str = "application/json"
    accept: str = "application/json"
    # Content types a caller may send to /invoke besides content_type.
    extra_content_types: tuple[str, ...] = ()
    # The request/response dialect of a chat container: OpenAI messages (LMI, vLLM, TGI Messages API).
    chat_format: Literal["openai"] = "openai"
    # A SageMaker asynchronous endpoint (InvokeEndpointAsync): served by POST /v1/models/{model}/async only.
    async_endpoint: bool = False
    # The SageMaker Model a batch transform job runs for this entry (POST /v1/batch-jobs, batch drops).
    model_name: str | None = Field(default=None, pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")

    @model_validator(mode="after")
    def _async_endpoint_takes_no_targets(self) -> SageMakerBackend:
        # InvokeEndpointAsync has no TargetModel, TargetVariant or InferenceComponentName.
        if self.async_endpoint and (self.target_model or self.target_variant or self.inference_component_name):
            raise ValueError(
                "an async_endpoint cannot use target_model, target_variant or inference_component_name "
                "(InvokeEndpointAsync has no such parameters)"
            )
        return self

    @property
    def target(self) -> dict[str, Any]:
        return {
            "endpoint_name": self.endpoint_name,
            "target_model": self.target_model,
            "target_variant": self.target_variant,
            "inference_component_name": self.inference_component_name,
        }


Backend = Annotated[BedrockBackend | SageMakerBackend, Field(discriminator="provider")]


class Limits(_Strict):
    """Left out, a limit takes the stack's default (settings); token caps are off unless set."""

    max_payload_bytes: int | None = Field(default=None, gt=0)
    max_input_tokens: int | None = Field(default=None, gt=0)
    max_output_tokens: int | None = Field(default=None, gt=0)
    timeout_seconds: float | None = Field(default=None, gt=0, le=900)


class Pricing(_Strict):
    """USD. Token prices for pay-per-token backends; instance price for provisioned endpoints."""

    input_per_1k_tokens: float = Field(default=0.0, ge=0)
    output_per_1k_tokens: float = Field(default=0.0, ge=0)
    # Cost of a request is its share of instance time: backend seconds x hourly price / 3600.
    instance_hourly_usd: float = Field(default=0.0, ge=0)


class ConfidenceSpec(_Strict):
    """Where each prediction's confidence lives in the model's JSON answer (README "The model catalog").

    `max_probability`: the highest value of each probabilities map or list the path reaches; `score`: each
    number the path reaches. Answers whose confidence cannot be read are not counted."""

    kind: Literal["max_probability", "score"]
    path: str = Field(min_length=1, max_length=256, examples=["predictions[*].probabilities"])
    # Compiled once here, at catalog load, so an answer is read without parsing the path again.
    _steps: Steps = PrivateAttr(default=())

    @field_validator("path")
    @classmethod
    def _path_compiles(cls, path: str) -> str:
        try:
            compile_path(path)
        except ValueError as exc:
            raise ValueError(f"confidence path {path!r} is invalid: {exc}") from None
        return path

    def model_post_init(self, _context: Any) -> None:
        self._steps = compile_path(self.path)

    @property
    def steps(self) -> Steps:
        return self._steps


class ModelEntry(_Strict):
    description: str = Field(min_length=1)
    task: Task
    backend: Backend
    limits: Limits = Limits()
    pricing: Pricing = Pricing()
    # Caller identities (tenant ids or IAM ARNs) allowed to use the model; shell-style globs, "*" for all.
    allowed_callers: tuple[str, ...] = Field(min_length=1)
    example_request: dict[str, Any] | None = None
    # Shown in /v1/models, e.g. to flag an emulated backend in local mode.
    labels: dict[str, str] = {}
    # Where the answer says how sure the model is; counted per variant for the deployment guard and alarm.
    confidence: ConfidenceSpec | None = None

    @model_validator(mode="after")
    def _task_fits_backend(self) -> ModelEntry:
        if self.task == "embedding" and isinstance(self.backend, BedrockBackend) and not self.backend.embedding_format:
            raise ValueError("backend.embedding_format is required for an embedding model on Bedrock")
        if self.task == "embedding" and isinstance(self.backend, SageMakerBackend):
            raise ValueError("embedding models are served from Bedrock; use task 'predict' for a SageMaker endpoint")
        if self.confidence is not None and self.task != "predict":
            raise ValueError("confidence applies to 'predict' models only (chat and embedding answers carry none)")
        return self

    def allows(self, caller: str) -> bool:
        return any(fnmatchcase(caller, pattern) for pattern in self.allowed_callers)


class MetricDefinition(_Strict):
    """A metric SageMaker reads from the training log: the first group of `regex` on each matching line."""

    name: str = Field(min_length=1, max_length=255)
    regex: str = Field(min_length=1, max_length=500)

    @model_validator(mode="after")
    def _compiles(self) -> MetricDefinition:
        try:
            pattern = re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"regex {self.regex!r} does not compile: {exc}") from None
        if pattern.groups < 1:
            raise ValueError(f"regex {self.regex!r} needs a group capturing the metric's value")
        return self


InstanceType = Annotated[str, Field(pattern=r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")]


class TrainerEntry(_Strict):
    """A training recipe operators may run (POST /v1/training-jobs): its image, what it logs, where it runs.

    The checkpoint contract (README "Writing a training script"): the script loads the newest checkpoint
    from its checkpoint directory at start and logs the step it resumed from, and logs each step it
    checkpoints; `resume_metric` and `checkpoint_metric` name the metric definitions that read those
    lines, so every attempt reports where it started and how far it got."""

    description: str = Field(min_length=1)
    image: str = Field(min_length=1, description="The training image (ECR URI)")
    # The image that serves the trained artifact (the registered version's container); default: image.
    inference_image: str | None = Field(default=None, min_length=1)
    metric_definitions: tuple[MetricDefinition, ...] = Field(min_length=1, max_length=40)
    # Merged under the request's own hyperparameters (the request wins).
    hyperparameters: dict[str, str] = {}
    # The instance types the trainer may use, in fallback order: the first is the default, and when
    # SageMaker has no capacity for one the next is tried.
    instance_types: tuple[InstanceType, ...] = Field(min_length=1)
    allowed_callers: tuple[str, ...] = Field(min_length=1)
    resume_metric: str = "sluice:resumed_from_step"
    checkpoint_metric: str = "sluice:checkpoint_step"
    labels: dict[str, str] = {}

    @model_validator(mode="after")
    def _progress_metrics_defined(self) -> TrainerEntry:
        names = {metric.name for metric in self.metric_definitions}
        for field_name in ("resume_metric", "checkpoint_metric"):
            if getattr(self, field_name) not in names:
                raise ValueError(
                    f"{field_name} {getattr(self, field_name)!r} names no metric definition; without it an "
                    "attempt cannot show where it resumed from or how far it checkpointed"
                )
        return self

    def allows(self, caller: str) -> bool:
        return any(fnmatchcase(caller, pattern) for pattern in self.allowed_callers)

    def metric_names(self) -> set[str]:
        return {metric.name for metric in self.metric_definitions}


class Catalog(_Strict):
    version: Literal[1] = 1
    models: dict[ModelName, ModelEntry]
    trainers: dict[ModelName, TrainerEntry] = {}

    def get(self, name: str) -> ModelEntry | None:
        return self.models.get(name)

    def trainer(self, name: str) -> TrainerEntry | None:
        return self.trainers.get(name)

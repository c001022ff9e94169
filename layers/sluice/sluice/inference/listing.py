"""GET /v1/models: the models this caller may use, each with how to call it."""

from __future__ import annotations

from sluice.catalog.models import ModelEntry, SageMakerBackend
from sluice.errors import ModelForbidden, ModelNotFound
from sluice.inference import limits
from sluice.openai_compat.models import ModelCard, ModelList
from sluice.request.access import current_catalog
from sluice.request.context import RequestContext
from sluice.settings import get_settings

_ROUTE_BY_TASK = {"chat": "/v1/chat/completions", "embedding": "/v1/embeddings"}


def list_models(ctx: RequestContext) -> ModelList:
    catalog = current_catalog()
    cards = [_card(name, entry) for name, entry in catalog.models.items() if entry.allows(ctx.caller.identity)]
    return ModelList(data=sorted(cards, key=lambda card: card.id))


def describe_model(ctx: RequestContext, name: str) -> ModelCard:
    entry = current_catalog().get(name)
    if entry is None:
        raise ModelNotFound(f"Model '{name}' does not exist. GET /v1/models lists the models you can use.")
    if not entry.allows(ctx.caller.identity):
        raise ModelForbidden(f"Model '{name}' is not available to caller '{ctx.caller.identity}'.")
    return _card(name, entry)


def _invoke_path(name: str, entry: ModelEntry) -> str:
    if isinstance(entry.backend, SageMakerBackend) and entry.backend.async_endpoint:
        return f"/v1/models/{name}/async"
    return _ROUTE_BY_TASK.get(entry.task, f"/v1/models/{name}/invoke")


def _card(name: str, entry: ModelEntry) -> ModelCard:
    return ModelCard(
        id=name,
        owned_by=entry.labels.get("owner", "sluice"),
        task=entry.task,
        provider=entry.backend.provider,
        description=entry.description,
        invoke_path=_invoke_path(name, entry),
        example_request=entry.example_request,
        labels=entry.labels,
        limits={
            "max_payload_bytes": entry.limits.max_payload_bytes or get_settings().default_max_payload_bytes,
            "max_input_tokens": entry.limits.max_input_tokens,
            "max_output_tokens": entry.limits.max_output_tokens,
            "timeout_seconds": limits.timeout_seconds(entry),
        },
    )

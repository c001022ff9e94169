"""From a logical model (or trainer) name to its catalog entry, checking the caller may use it."""

from __future__ import annotations

from functools import cache

from sluice.catalog.models import Catalog, ModelEntry, SageMakerBackend, TrainerEntry
from sluice.catalog.store import CatalogStore
from sluice.errors import InvalidRequest, ModelForbidden, ModelNotFound, TrainerNotFound
from sluice.request.context import RequestContext
from sluice.settings import get_settings


@cache
def catalog_store() -> CatalogStore:
    settings = get_settings()
    return CatalogStore(settings.catalog_parameter, settings.catalog_ttl_seconds)


def current_catalog() -> Catalog:
    return catalog_store().get()


def resolve_model(
    ctx: RequestContext, name: str, *, task: str | None = None, route: str = "", asynchronous: bool = False
) -> ModelEntry:
    """`asynchronous`: the caller submits a job (POST /v1/models/{model}/async), the only way to reach
    a SageMaker asynchronous endpoint."""
    entry = current_catalog().get(name)
    if entry is None:
        raise ModelNotFound(
            f"Model '{name}' does not exist. GET /v1/models lists the models you can use.", param="model"
        )
    if not entry.allows(ctx.caller.identity):
        raise ModelForbidden(
            f"Model '{name}' is not available to caller '{ctx.caller.identity}'. Ask the platform team for access.",
            param="model",
        )
    ctx.model, ctx.provider = name, entry.backend.provider
    if not asynchronous and isinstance(entry.backend, SageMakerBackend) and entry.backend.async_endpoint:
        raise InvalidRequest(
            f"Model '{name}' runs on a SageMaker asynchronous endpoint; submit it as a job with "
            f"POST /v1/models/{name}/async and poll GET /v1/jobs/{{id}}.",
            param="model",
        )
    if task and entry.task != task:
        raise InvalidRequest(
            f"Model '{name}' is a {entry.task} model and cannot serve {route}; "
            f"use POST /v1/models/{name}/invoke or pick a {task} model.",
            param="model",
        )
    return entry


def resolve_trainer(ctx: RequestContext, name: str) -> TrainerEntry:
    """A trainer the caller may run. One it may not is answered exactly like one that does not exist:
    trainers are the platform's recipes, and their names are not for every operator to discover."""
    entry = current_catalog().trainer(name)
    if entry is None or not entry.allows(ctx.caller.identity):
        raise TrainerNotFound(
            f"Trainer '{name}' does not exist. The catalog's trainers section lists the trainers; "
            "ask the platform team for one.",
            param="trainer",
        )
    return entry

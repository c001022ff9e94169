"""GET /v1/models: OpenAI's model list, with what a newcomer needs to call each model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str
    task: str
    provider: str
    description: str
    invoke_path: str
    example_request: dict[str, Any] | None = None
    labels: dict[str, str] = {}
    limits: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]

"""The Bedrock Converse request a client sends to /invoke of a chat model, and its text size."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ConverseRequest(BaseModel):
    """Converse's own fields (modelId comes from the catalog); unknown keys are refused, not dropped."""

    model_config = ConfigDict(extra="forbid")

    messages: list[dict[str, Any]] = Field(min_length=1)
    system: list[dict[str, Any]] | None = None
    inferenceConfig: dict[str, Any] | None = None  # noqa: N815 - Converse's field name
    toolConfig: dict[str, Any] | None = None  # noqa: N815
    guardrailConfig: dict[str, Any] | None = None  # noqa: N815
    additionalModelRequestFields: dict[str, Any] | None = None  # noqa: N815
    additionalModelResponseFieldPaths: list[str] | None = None  # noqa: N815
    requestMetadata: dict[str, str] | None = None  # noqa: N815

    def text_chars(self) -> int:
        blocks = [block for message in self.messages for block in message.get("content") or []]
        blocks += self.system or []
        return sum(len(block["text"]) for block in blocks if isinstance(block, dict) and "text" in block)

    def to_params(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)

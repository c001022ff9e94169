"""POST /v1/chat/completions: OpenAI chat to Bedrock Converse or to a SageMaker chat container."""

from __future__ import annotations

import json
import time
from typing import Any

from sluice.catalog.models import BedrockBackend, ModelEntry, SageMakerBackend
from sluice.errors import InvalidRequest, ModelFailed
from sluice.inference import limits
from sluice.inference.accounting import account
from sluice.openai_compat.chat import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionRequest,
    CompletionUsage,
    SluiceMetadata,
)
from sluice.providers import bedrock, sagemaker
from sluice.providers.result import BackendResult
from sluice.request.access import resolve_model
from sluice.request.context import RequestContext

# Converse stop reasons in OpenAI's words.
_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "content_filtered": "content_filter",
    "guardrail_intervened": "content_filter",
    "tool_use": "tool_calls",
}


def create_chat_completion(ctx: RequestContext, request: ChatCompletionRequest) -> ChatCompletion:
    if request.stream:
        raise InvalidRequest(
            "Streaming responses (stream=true) are not available yet; send the request without stream.",
            param="stream",
        )
    entry = resolve_model(ctx, request.model, task="chat", route="/v1/chat/completions")
    texts = [message.text() for message in request.messages]
    # As for embeddings, the payload is the text the backend receives (the card promises this limit).
    limits.check_payload(request.model, entry, sum(len(text.encode()) for text in texts))
    text_chars = sum(len(text) for text in texts)
    limits.check_input_tokens(request.model, entry, text_chars)
    param, requested = request.requested_max_tokens()
    max_tokens = limits.output_token_cap(request.model, entry, requested, param)
    if isinstance(entry.backend, BedrockBackend):
        result = bedrock.converse(entry.backend, _converse_params(request, max_tokens), limits.timeout_seconds(entry))
        content, finish_reason = _converse_answer(result)
    else:
        result, content, finish_reason = _call_chat_container(entry, entry.backend, request, max_tokens)
    accounted = account(ctx, request.model, entry, result)
    prompt_tokens = result.input_tokens or 0
    completion_tokens = result.output_tokens or 0
    return ChatCompletion(
        id=f"chatcmpl-{ctx.request_id}",
        created=int(time.time()),
        model=request.model,
        choices=[ChatChoice(message=AssistantMessage(content=content), finish_reason=finish_reason)],
        usage=CompletionUsage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            total_tokens=prompt_tokens + completion_tokens,
        ),
        sluice=SluiceMetadata(
            provider=entry.backend.provider,
            target=entry.backend.target,
            variant=result.variant,
            latency_ms=accounted.latency_ms,
            backend_latency_ms=accounted.backend_latency_ms,
            estimated_cost_usd=accounted.estimated_cost_usd,
        ),
    )


def _converse_params(request: ChatCompletionRequest, max_tokens: int | None) -> dict[str, Any]:
    system = [{"text": m.text()} for m in request.messages if m.role in ("system", "developer")]
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role in ("system", "developer"):
            continue
        # Converse wants alternating roles: consecutive turns of one role become one turn.
        if messages and messages[-1]["role"] == message.role:
            messages[-1]["content"].append({"text": message.text()})
        else:
            messages.append({"role": message.role, "content": [{"text": message.text()}]})
    if not messages:
        raise InvalidRequest("messages must contain at least one user message.", param="messages")
    config = {
        "maxTokens": max_tokens,
        "temperature": request.temperature,
        "topP": request.top_p,
        "stopSequences": request.stop_sequences(),
    }
    params: dict[str, Any] = {"messages": messages}
    if system:
        params["system"] = system
    config = {key: value for key, value in config.items() if value is not None}
    if config:
        params["inferenceConfig"] = config
    return params


def _converse_answer(result: BackendResult) -> tuple[str, str]:
    response = result.body
    assert isinstance(response, dict)
    blocks = response.get("output", {}).get("message", {}).get("content", [])
    text = "".join(block.get("text", "") for block in blocks)
    reason = response.get("stopReason", "end_turn")
    return text, _FINISH_REASONS.get(reason, "stop")


def _call_chat_container(
    entry: ModelEntry, backend: SageMakerBackend, request: ChatCompletionRequest, max_tokens: int | None
) -> tuple[BackendResult, str | None, str | None]:
    body = request.model_dump(exclude_none=True, exclude={"max_completion_tokens"})
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    raw = sagemaker.invoke_endpoint(
        backend, json.dumps(body).encode(), "application/json", limits.timeout_seconds(entry)
    )
    try:
        answer = json.loads(raw.body)
        choice = answer["choices"][0]
        usage = answer.get("usage") or {}
        content = choice["message"].get("content")
        finish_reason = choice.get("finish_reason")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ModelFailed(
            "The chat container's answer is not an OpenAI chat completion; check the catalog's chat_format.",
            details={"problem": repr(exc)},
        ) from exc
    result = BackendResult(
        body=raw.body,
        content_type=raw.content_type,
        backend_latency_ms=raw.backend_latency_ms,
        variant=raw.variant,
        input_tokens=usage.get("prompt_tokens"),
        output_tokens=usage.get("completion_tokens"),
    )
    return result, content, finish_reason

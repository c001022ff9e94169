"""POST /v1/embeddings: OpenAI embeddings from Bedrock's Titan Text Embeddings v2 or Cohere Embed."""

from __future__ import annotations

import base64
import json
import struct
from collections.abc import Iterator

from sluice.catalog.models import BedrockBackend
from sluice.errors import InvalidRequest, ModelFailed
from sluice.inference import limits
from sluice.inference.accounting import account
from sluice.openai_compat.chat import SluiceMetadata
from sluice.openai_compat.embeddings import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from sluice.providers import bedrock
from sluice.providers.result import BackendResult
from sluice.request.access import resolve_model
from sluice.request.context import RequestContext

# Cohere Embed takes at most this many texts per call.
COHERE_BATCH = 96


def create_embeddings(ctx: RequestContext, request: EmbeddingRequest) -> EmbeddingList:
    entry = resolve_model(ctx, request.model, task="embedding", route="/v1/embeddings")
    backend = entry.backend
    assert isinstance(backend, BedrockBackend)
    texts = request.texts()
    limits.check_payload(request.model, entry, sum(len(text.encode()) for text in texts))
    for text in texts:
        limits.check_input_tokens(request.model, entry, len(text), param="input")
    if request.dimensions and backend.embedding_format != "titan-v2":
        raise InvalidRequest(f"Model '{request.model}' does not support choosing dimensions.", param="dimensions")
    vectors: list[list[float]] = []
    results: list[BackendResult] = []
    for body in _bodies(backend, texts, request.dimensions):
        result = bedrock.invoke_model(
            backend, json.dumps(body).encode(), "application/json", "application/json", limits.timeout_seconds(entry)
        )
        vectors.extend(_vectors(backend, result))
        results.append(result)
    if len(vectors) != len(texts):
        raise ModelFailed(f"The model returned {len(vectors)} embeddings for {len(texts)} inputs.")
    total = _combined(results)
    accounted = account(ctx, request.model, entry, total)
    tokens = total.input_tokens or 0
    return EmbeddingList(
        data=[
            Embedding(index=i, embedding=_encode(vector, request.encoding_format)) for i, vector in enumerate(vectors)
        ],
        model=request.model,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
        sluice=SluiceMetadata(
            provider="bedrock",
            target=backend.target,
            latency_ms=accounted.latency_ms,
            backend_latency_ms=accounted.backend_latency_ms,
            estimated_cost_usd=accounted.estimated_cost_usd,
        ),
    )


def _bodies(backend: BedrockBackend, texts: list[str], dimensions: int | None) -> Iterator[dict]:
    if backend.embedding_format == "cohere":
        for start in range(0, len(texts), COHERE_BATCH):
            yield {"texts": texts[start : start + COHERE_BATCH], "input_type": "search_document"}
        return
    # Titan v2 embeds one text per call.
    for text in texts:
        body: dict = {"inputText": text}
        if dimensions:
            body["dimensions"] = dimensions
        yield body


def _vectors(backend: BedrockBackend, result: BackendResult) -> list[list[float]]:
    try:
        answer = json.loads(result.body)
        if backend.embedding_format == "cohere":
            embeddings = answer["embeddings"]
            # With embedding_types the answer is keyed by type; without, a plain list.
            return embeddings["float"] if isinstance(embeddings, dict) else embeddings
        return [answer["embedding"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelFailed(
            f"The embedding model's answer is not in the {backend.embedding_format} format; check the catalog."
        ) from exc


def _combined(results: list[BackendResult]) -> BackendResult:
    tokens = [result.input_tokens for result in results]
    return BackendResult(
        body=b"",
        content_type="application/json",
        backend_latency_ms=sum(result.backend_latency_ms for result in results),
        input_tokens=None if None in tokens else sum(t for t in tokens if t is not None),
    )


def _encode(vector: list[float], encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        # OpenAI's base64 form: little-endian float32, as the SDK decodes it.
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
    return vector

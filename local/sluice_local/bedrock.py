"""An emulated Bedrock Runtime: no foundation model runs locally, so answers are made up, and say so.

Point boto3 at it with `AWS_ENDPOINT_URL_BEDROCK_RUNTIME=<url>` (or `endpoint_url=`). Every answer,
errors included, carries the header `X-Sluice-Emulated: bedrock`.

`POST /model/{modelId}/converse` (any model id but an embedding model's) replies
"[emulated Bedrock] You said: <the last user message's text, cut at 200 characters>", with stopReason
end_turn; `stop_sequence` when inferenceConfig.stopSequences occurs in the reply (cut before it);
`max_tokens` when inferenceConfig.maxTokens is below the reply's token count (cut to that many tokens).

`POST /model/{modelId}/invoke` runs embedding bodies, told apart by their shape:

- Titan Text Embeddings v2, `{"inputText", "dimensions"?, "normalize"?, "embeddingTypes"?}`:
  `{"embedding": [...], "inputTextTokenCount": n}` of 256, 512 or 1024 (default) dimensions;
- Cohere Embed, `{"texts": [...], "input_type", "truncate"?, "embedding_types"?}`:
  `{"embeddings": [[...], ...], "id", "response_type": "embeddings_floats", "texts"}` of 1024 dimensions.

Other bodies are a ValidationException (400). Vectors are pseudo-embeddings: a sum of fixed pseudo-random
vectors, one per word of the text (lowercased) and one for the whole text, hashed with SHAKE-256, then
normalized. Equal texts give equal vectors, texts sharing words point in similar directions, and the
input type (Cohere) does not matter, so a query finds the document it repeats. Titan's 256 and 512
dimensions are the first dimensions of the 1024, renormalized.

Token counts, everywhere (usage, inputTextTokenCount, X-Amzn-Bedrock-Input-Token-Count and
X-Amzn-Bedrock-Output-Token-Count headers): ceil(characters / 4), at least 1 — for Converse input, the
characters of every `text` block in `system` and `messages` together; for Cohere, per text, summed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
import urllib.parse
import uuid
from array import array
from collections import Counter
from functools import lru_cache
from http import HTTPStatus
from typing import Any

from sluice_local._http import LOOPBACK, ApiError, AwsHandler, LoopbackService

EMULATED_HEADER = "X-Sluice-Emulated"
REPLY_PREFIX = "[emulated Bedrock] You said: "
QUOTE_CHARS = 200
MAX_BODY_BYTES = 20 * 1024 * 1024
EMBEDDING_DIMENSIONS = 1024
TITAN_DIMENSIONS = (256, 512, 1024)
TITAN_MAX_CHARS = 50_000
COHERE_MAX_TEXTS = 96
COHERE_MAX_CHARS = 2048
COHERE_INPUT_TYPES = ("search_document", "search_query", "classification", "clustering")
_TITAN_KEYS = {"inputText", "dimensions", "normalize", "embeddingTypes"}
_COHERE_KEYS = {"texts", "input_type", "truncate", "embedding_types"}
_ROUTE = re.compile(r"^/model/([^/]+)/(converse|invoke|converse-stream|invoke-with-response-stream)$")
_WORD = re.compile(r"\w+")
_ONLY_EMBEDDINGS = (
    "The emulated Bedrock runs no foundation model: InvokeModel accepts only Titan Text Embeddings v2 bodies "
    '({"inputText": ...}) and Cohere Embed bodies ({"texts": [...], "input_type": ...}); use Converse for chat.'
)

log = logging.getLogger("sluice_local.bedrock")


def estimate_tokens(text: str) -> int:
    """The emulator's token count for `text`: ceil(characters / 4), at least 1."""
    return max(1, math.ceil(len(text) / 4))


def pseudo_embedding(text: str, dimensions: int = EMBEDDING_DIMENSIONS, normalize: bool = True) -> list[float]:
    """A deterministic stand-in for an embedding of `text` (see the module docstring)."""
    total = [0.0] * EMBEDDING_DIMENSIONS
    features = Counter("w:" + word for word in _WORD.findall(text.lower()))
    features["t:" + text] += 1
    for feature, count in features.items():
        total = [t + count * v for t, v in zip(total, _feature_vector(feature), strict=True)]
    vector = total[:dimensions]
    if not normalize:
        return [v / 32768 for v in vector]
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


@lru_cache(maxsize=4096)
def _feature_vector(feature: str) -> array:
    values = array(
        "h", hashlib.shake_256(feature.encode("utf-8", errors="surrogatepass")).digest(2 * EMBEDDING_DIMENSIONS)
    )
    if array("h", [1]).tobytes()[0] == 0:  # big-endian machine: read the bytes as little-endian anyway
        values.byteswap()
    return values


class LocalBedrock(LoopbackService):
    """The emulated Bedrock Runtime. `start()` binds `host:port` (0: a free port) and returns the URL."""

    name = "emulated Bedrock runtime"

    def __init__(self, *, host: str = LOOPBACK, port: int = 0) -> None:
        super().__init__(host, port)

    def converse(self, model_id: str, request: Any) -> tuple[dict[str, Any], int, int]:
        """Converse's answer for `request`, with its input and output token counts."""
        started = time.perf_counter()
        if "embed" in model_id.lower():
            raise _invalid(
                f"This action doesn't support the model that you provided ({model_id} is an embedding model). "
                "Try again with a supported text or chat model."
            )
        messages, system, config = _converse_parts(request)
        texts = [block["text"] for block in system if isinstance(block, dict) and isinstance(block.get("text"), str)]
        texts += [text for message in messages for text in _texts(message)]
        input_tokens = estimate_tokens("".join(texts))
        last_user = next(m for m in reversed(messages) if m["role"] == "user")
        said = " ".join(_texts(last_user)).strip() or "(no text)"
        if len(said) > QUOTE_CHARS:
            said = said[: QUOTE_CHARS - 1] + "…"
        reply, stop_reason = REPLY_PREFIX + said, "end_turn"
        cuts = [reply.find(s) for s in config.get("stopSequences") or () if s and s in reply]
        if cuts:
            reply, stop_reason = reply[: min(cuts)], "stop_sequence"
        max_tokens = config.get("maxTokens")
        if max_tokens is not None and estimate_tokens(reply) > max_tokens:
            reply, stop_reason = reply[: max_tokens * 4], "max_tokens"
        output_tokens = estimate_tokens(reply)
        answer = {
            "output": {"message": {"role": "assistant", "content": [{"text": reply}]}},
            "stopReason": stop_reason,
            "usage": {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "totalTokens": input_tokens + output_tokens,
            },
            "metrics": {"latencyMs": round((time.perf_counter() - started) * 1000)},
        }
        return answer, input_tokens, output_tokens

    def invoke(self, body: Any) -> tuple[dict[str, Any], int]:
        """InvokeModel's answer for an embeddings body, with its input token count."""
        if isinstance(body, dict) and "inputText" in body:
            return _titan(body)
        if isinstance(body, dict) and "texts" in body:
            return _cohere(body)
        raise _invalid(_ONLY_EMBEDDINGS)


def _invalid(message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, "ValidationException", message)


def _malformed(problem: str) -> ApiError:
    return _invalid(f"Malformed input request: {problem}, please reformat your input and try again.")


def _texts(message: dict[str, Any]) -> list[str]:
    return [
        block["text"] for block in message["content"] if isinstance(block, dict) and isinstance(block.get("text"), str)
    ]


def _converse_parts(request: Any) -> tuple[list[dict[str, Any]], list[Any], dict[str, Any]]:
    if not isinstance(request, dict):
        raise _invalid("The request body must be a JSON object.")
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("The messages field is required and must be a non-empty list.")
    previous = None
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role must be user or assistant.")
        if not isinstance(message.get("content"), list):
            raise _invalid(f"messages.{i}.content must be a list of content blocks.")
        if previous is None and message["role"] != "user":
            raise _invalid(
                "A conversation must start with a user message. Try again with a conversation that starts "
                "with a user message."
            )
        if message["role"] == previous:
            raise _invalid(
                "A conversation must alternate between user and assistant roles. Make sure the conversation "
                "alternates between user and assistant roles and try again."
            )
        previous = message["role"]
    system = request.get("system") or []
    if not isinstance(system, list):
        raise _invalid("system must be a list of content blocks.")
    config = request.get("inferenceConfig") or {}
    if not isinstance(config, dict):
        raise _invalid("inferenceConfig must be an object.")
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise _invalid("inferenceConfig.maxTokens must be an integer of at least 1.")
    for name in ("temperature", "topP"):
        value = config.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1):
            raise _invalid(f"inferenceConfig.{name} must be a number between 0 and 1.")
    stops = config.get("stopSequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise _invalid("inferenceConfig.stopSequences must be a list of strings.")
    return messages, system, config


def _titan(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    extra = sorted(set(body) - _TITAN_KEYS)
    if extra:
        raise _malformed(f"#: extraneous key [{extra[0]}] is not permitted")
    text = body["inputText"]
    if not isinstance(text, str):
        raise _malformed("#/inputText: expected type: String")
    if not text:
        raise _malformed("#/inputText: expected minLength: 1, actual: 0")
    if len(text) > TITAN_MAX_CHARS:
        raise _malformed(f"#/inputText: expected maxLength: {TITAN_MAX_CHARS}, actual: {len(text)}")
    dimensions = body.get("dimensions", EMBEDDING_DIMENSIONS)
    if isinstance(dimensions, bool) or dimensions not in TITAN_DIMENSIONS:
        raise _malformed(f"#/dimensions: {dimensions!r} is not a valid enum value (256, 512 or 1024)")
    normalize = body.get("normalize", True)
    if not isinstance(normalize, bool):
        raise _malformed("#/normalize: expected type: Boolean")
    types = body.get("embeddingTypes")
    if types is not None and (not isinstance(types, list) or not types or not set(types) <= {"float", "binary"}):
        raise _malformed('#/embeddingTypes: expected a non-empty list of "float" and "binary"')
    vector = pseudo_embedding(text, dimensions, normalize)
    tokens = estimate_tokens(text)
    answer: dict[str, Any] = {"embedding": vector, "inputTextTokenCount": tokens}
    if types:
        by_type: dict[str, Any] = {}
        if "float" in types:
            by_type["float"] = vector
        if "binary" in types:
            by_type["binary"] = [1 if v > 0 else 0 for v in vector]
        answer["embeddingsByType"] = by_type
    return answer, tokens


def _cohere(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    extra = sorted(set(body) - _COHERE_KEYS)
    if extra:
        raise _malformed(f"#: extraneous key [{extra[0]}] is not permitted")
    texts = body["texts"]
    if not isinstance(texts, list) or not texts or len(texts) > COHERE_MAX_TEXTS:
        raise _malformed(f"#/texts: expected a list of 1 to {COHERE_MAX_TEXTS} strings")
    if body.get("input_type") not in COHERE_INPUT_TYPES:
        raise _malformed(f"#/input_type: {body.get('input_type')!r} is not one of {', '.join(COHERE_INPUT_TYPES)}")
    truncate = body.get("truncate", "NONE")
    if truncate not in ("NONE", "START", "END"):
        raise _malformed(f"#/truncate: {truncate!r} is not one of NONE, START, END")
    types = body.get("embedding_types")
    if types is not None and (not isinstance(types, list) or not types or set(types) != {"float"}):
        raise _invalid('The emulated Bedrock returns only "float" Cohere embeddings (embedding_types).')
    kept = []
    for i, text in enumerate(texts):
        if not isinstance(text, str) or not text:
            raise _malformed(f"#/texts/{i}: expected a non-empty string")
        if len(text) > COHERE_MAX_CHARS:
            if truncate == "NONE":
                raise _invalid(
                    f"texts[{i}] is too long ({len(text)} characters, the limit is {COHERE_MAX_CHARS}); "
                    'shorten it or set "truncate" to START or END.'
                )
            text = text[:COHERE_MAX_CHARS] if truncate == "END" else text[-COHERE_MAX_CHARS:]
        kept.append(text)
    vectors = [pseudo_embedding(text) for text in kept]
    tokens = sum(estimate_tokens(text) for text in kept)
    answer: dict[str, Any] = {"id": str(uuid.uuid4()), "texts": kept}
    if types:
        answer.update(embeddings={"float": vectors}, response_type="embeddings_by_type")
    else:
        answer.update(embeddings=vectors, response_type="embeddings_floats")
    return answer, tokens


def _accepts_json(header: str | None) -> bool:
    if not header:
        return True
    media = {part.split(";", 1)[0].strip().lower() for part in header.split(",")}
    return bool(media & {"application/json", "application/*", "*/*"})


class _Handler(AwsHandler):
    server_version = "sluice-local-bedrock-runtime"
    max_body_bytes = MAX_BODY_BYTES
    validation_code = "ValidationException"
    message_key = "message"
    extra_headers = {EMULATED_HEADER: "bedrock"}

    def handle_post(self) -> None:
        app: LocalBedrock = self.server.app
        raw = self.read_body()
        match = _ROUTE.match(urllib.parse.urlsplit(self.path).path)
        if match is None:
            raise self.unknown_operation()
        model_id, operation = urllib.parse.unquote(match.group(1)), match.group(2)
        if operation not in ("converse", "invoke"):
            raise _invalid(f"The emulated Bedrock does not stream; call {operation.split('-')[0]} instead.")
        if operation == "invoke":
            content_type = (self.headers.get("Content-Type") or "application/json").split(";", 1)[0].strip().lower()
            if content_type != "application/json":
                raise _invalid(f"The emulated Bedrock takes application/json bodies, not {content_type}.")
            if not _accepts_json(self.headers.get("Accept")):
                raise _invalid("The emulated Bedrock answers application/json only (Accept).")
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise _malformed(f"the body is not JSON ({exc})") from None
        if operation == "converse":
            answer, input_tokens, output_tokens = app.converse(model_id, body)
        else:
            answer, input_tokens = app.invoke(body)
            output_tokens = 0
        self.send_json(
            HTTPStatus.OK,
            answer,
            {
                "X-Amzn-Bedrock-Input-Token-Count": str(input_tokens),
                "X-Amzn-Bedrock-Output-Token-Count": str(output_tokens),
            },
        )


LocalBedrock.handler_class = _Handler

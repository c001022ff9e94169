"""Helpers for driving the API handler with sample events and reading its proxy responses."""

from __future__ import annotations

import copy
import io
import json
from typing import Any

from botocore.response import StreamingBody

from tests.conftest import load_event, load_handler, shared_client

# The authorizer context a valid API key produces (see events/api/*.json).
ACME_AUTHORIZER = {"tenant": "acme", "key_id": "key_0123456789ab", "auth": "api_key", "principalId": "acme"}
BATCH_ROLE_ARN = "arn:aws:iam::123456789012:role/batch-scoring"
OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}


def event(name: str, **changes: Any) -> dict:
    """A copy of events/api/<name>.json; `body=` replaces the body (dicts become JSON), `headers=` adds headers."""
    evt = copy.deepcopy(load_event(f"api/{name}.json"))
    if "body" in changes:
        body = changes.pop("body")
        evt["body"] = body if body is None or isinstance(body, str) else json.dumps(body)
        if evt["body"] is not None:
            set_header(evt, "Content-Length", str(len(evt["body"].encode())))
    for header_name, value in changes.pop("headers", {}).items():
        set_header(evt, header_name, value)
    assert not changes, f"unknown changes: {sorted(changes)}"
    return evt


def set_header(evt: dict, name: str, value: str | None) -> None:
    """Replace a header (any case) in both header maps, or remove it when value is None."""
    for key in [k for k in evt["headers"] if k.lower() == name.lower()]:
        del evt["headers"][key]
        evt["multiValueHeaders"].pop(key, None)
    if value is not None:
        evt["headers"][name] = value
        evt["multiValueHeaders"][name] = [value]


def call(evt: dict, lambda_context: Any) -> dict:
    return load_handler("api").lambda_handler(evt, lambda_context)


def body_of(response: dict) -> Any:
    return json.loads(response["body"])


def header(response: dict, name: str) -> str | None:
    for key, value in (response.get("headers") or {}).items():
        if key.lower() == name.lower():
            return value
    for key, values in (response.get("multiValueHeaders") or {}).items():
        if key.lower() == name.lower():
            return ",".join(values)
    return None


def request_id_of(evt: dict) -> str:
    return evt["requestContext"]["requestId"]


def assert_error(response: dict, evt: dict, status: int, code: str, error_type: str | None = None) -> dict:
    """The response is an OpenAI-shaped error with the request id; returns the error object."""
    assert response["statusCode"] == status, response["body"]
    assert header(response, "Content-Type") == "application/json"
    payload = body_of(response)
    assert set(payload) == {"error"}
    error = payload["error"]
    assert set(error) >= OPENAI_ERROR_FIELDS
    assert isinstance(error["message"], str)
    assert error["message"]
    assert error["code"] == code
    if error_type is not None:
        assert error["type"] == error_type
    assert error["request_id"] == request_id_of(evt)
    assert header(response, "X-Request-Id") == request_id_of(evt)
    return error


def streaming(data: bytes | str) -> StreamingBody:
    raw = data.encode() if isinstance(data, str) else data
    return StreamingBody(io.BytesIO(raw), len(raw))


def sagemaker_answer(body: bytes | str | dict, content_type: str = "application/json", variant: str = "AllTraffic"):
    raw = json.dumps(body) if isinstance(body, dict) else body
    return {"Body": streaming(raw), "ContentType": content_type, "InvokedProductionVariant": variant}


def bedrock_invoke_answer(body: dict, input_tokens: int | None = None, output_tokens: int | None = None) -> dict:
    """An InvokeModel answer; Bedrock reports token counts in HTTP headers, which boto3 keeps in ResponseMetadata."""
    headers = {"content-type": "application/json", "x-amzn-requestid": "11111111-2222-3333-4444-555555555555"}
    if input_tokens is not None:
        headers["x-amzn-bedrock-input-token-count"] = str(input_tokens)
    if output_tokens is not None:
        headers["x-amzn-bedrock-output-token-count"] = str(output_tokens)
    return {
        "body": streaming(json.dumps(body)),
        "contentType": "application/json",
        "ResponseMetadata": {"RequestId": headers["x-amzn-requestid"], "HTTPStatusCode": 200, "HTTPHeaders": headers},
    }


def converse_answer(
    text: str, *, stop_reason: str = "end_turn", input_tokens: int = 25, output_tokens: int = 9, latency_ms: int = 412
) -> dict:
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": text}]}},
        "stopReason": stop_reason,
        "usage": {
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens,
        },
        "metrics": {"latencyMs": latency_ms},
    }


def store_catalog(document: dict) -> None:
    """Replace the catalog in (moto) SSM before the first request of a test reads it."""
    import os

    shared_client("ssm").put_parameter(
        Name=os.environ["SLUICE_CATALOG_PARAMETER"],
        Value=json.dumps(document),
        Type="String",
        Tier="Advanced",
        Overwrite=True,
    )

"""The official OpenAI Python SDK works against Sluice unchanged.

The SDK's HTTP client gets a mock transport that does what API Gateway does: it turns the SDK's request
into a REST proxy event (starting from the sample event of that route, with the API-key authorizer's
context), calls the API handler, and turns the proxy result back into an HTTP response. Everything from
the SDK's request building to its response parsing and error classes runs for real. The openai SDK
ships with httpx2 (httpx's successor), so the transport is httpx2's.
"""

from __future__ import annotations

import base64
import json

import httpx2
import openai
import pytest

from tests.api_support import (
    bedrock_invoke_answer,
    call,
    converse_answer,
    event,
)

API_KEY = "sk-sluice-EXAMPLE-not-a-real-key-0000000000000000000"
HOST = "abc123.execute-api.us-east-1.amazonaws.com"
STAGE = "v1"
# The stage is the first path segment; the API's own resources start with /v1 as well.
BASE_URL = f"https://{HOST}/{STAGE}/v1"

# The sample event each resource's requests start from.
TEMPLATES = {
    "/v1/chat/completions": ("chat-completions", "/v1/chat/completions"),
    "/v1/embeddings": ("embeddings", "/v1/embeddings"),
    "/v1/models": ("models-list", "/v1/models"),
}


class ApiGateway:
    """An httpx2 transport handler standing in for API Gateway in front of the API function."""

    def __init__(self, lambda_context) -> None:
        self.lambda_context = lambda_context
        self.events: list[dict] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        full_path = request.url.path
        assert full_path.startswith(f"/{STAGE}/")
        path = full_path[len(STAGE) + 1 :]
        if request.headers.get("authorization") != f"Bearer {API_KEY}":
            # What the Lambda authorizer makes API Gateway answer.
            return httpx2.Response(401, json={"message": "Unauthorized"})
        template, resource = TEMPLATES.get(path, ("model-get", "/v1/models/{model}"))
        evt = event(template)
        headers = dict(request.headers.items())
        body = request.content.decode() if request.content else None
        query = dict(request.url.params)
        evt.update(
            resource=resource,
            path=path,
            httpMethod=request.method,
            headers=headers,
            multiValueHeaders={name: [value] for name, value in headers.items()},
            queryStringParameters=query or None,
            multiValueQueryStringParameters={k: [v] for k, v in query.items()} or None,
            pathParameters={"model": path.rsplit("/", 1)[1]} if resource == "/v1/models/{model}" else None,
            body=body,
            isBase64Encoded=False,
        )
        evt["requestContext"].update(resourcePath=resource, httpMethod=request.method, path=full_path)
        self.events.append(evt)

        result = call(evt, self.lambda_context)

        response_headers = [(k, v) for k, v in (result.get("headers") or {}).items()]
        for name, values in (result.get("multiValueHeaders") or {}).items():
            response_headers += [(name, value) for value in values]
        content = base64.b64decode(result["body"]) if result.get("isBase64Encoded") else result["body"].encode()
        return httpx2.Response(result["statusCode"], headers=response_headers, content=content)


@pytest.fixture
def gateway(lambda_context) -> ApiGateway:
    return ApiGateway(lambda_context)


@pytest.fixture
def client(gateway) -> openai.OpenAI:
    # No retries: a 429 must surface at once (the SDK would otherwise honour Retry-After and sleep).
    return openai.OpenAI(
        base_url=BASE_URL,
        api_key=API_KEY,
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(gateway)),
    )


def test_sdk_chat_completion_round_trip(catalog, stubbed, client, gateway):
    stubbed("bedrock-runtime").add_response(
        "converse",
        converse_answer("Paris.", input_tokens=20, output_tokens=2),
        expected_params={
            "modelId": "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            "system": [{"text": "Answer in one word."}],
            "messages": [{"role": "user", "content": [{"text": "Capital of France?"}]}],
            "inferenceConfig": {"maxTokens": 10, "temperature": 0.0},
        },
    )

    completion = client.chat.completions.create(
        model="claude-chat",
        messages=[
            {"role": "system", "content": "Answer in one word."},
            {"role": "user", "content": "Capital of France?"},
        ],
        max_tokens=10,
        temperature=0,
    )

    assert completion.choices[0].message.content == "Paris."
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 20
    assert completion.usage.completion_tokens == 2
    assert completion.usage.total_tokens == 22
    assert completion.model == "claude-chat"
    assert completion.id == f"chatcmpl-{gateway.events[0]['requestContext']['requestId']}"
    # Sluice's extra facts survive the SDK's parsing.
    assert completion.sluice["provider"] == "bedrock"
    (sent,) = gateway.events
    assert sent["path"] == "/v1/chat/completions"
    assert sent["httpMethod"] == "POST"


def test_sdk_embeddings_default_to_base64_and_decode_to_the_model_vectors(catalog, stubbed, client, gateway):
    vectors = [[0.5, -0.25, 0.125, 3.0], [1.0, 0.0, -2.5, 0.0625]]
    for text, vector in zip(["alpha", "beta"], vectors, strict=True):
        stubbed("bedrock-runtime").add_response(
            "invoke_model",
            bedrock_invoke_answer({"embedding": vector}, input_tokens=1),
            expected_params={
                "modelId": "amazon.titan-embed-text-v2:0",
                "body": json.dumps({"inputText": text}).encode(),
                "contentType": "application/json",
                "accept": "application/json",
            },
        )

    result = client.embeddings.create(model="titan-embed", input=["alpha", "beta"])

    (sent,) = gateway.events
    assert json.loads(sent["body"])["encoding_format"] == "base64"  # the SDK's default
    assert [item.embedding for item in result.data] == vectors  # decoded by the SDK itself
    assert [item.index for item in result.data] == [0, 1]
    assert result.usage.prompt_tokens == 2
    assert result.model == "titan-embed"


def test_sdk_embeddings_in_float_format(catalog, stubbed, client):
    stubbed("bedrock-runtime").add_response(
        "invoke_model", bedrock_invoke_answer({"embeddings": [[0.1, 0.2], [0.3, 0.4]]}, input_tokens=4)
    )

    result = client.embeddings.create(model="cohere-embed", input=["a", "b"], encoding_format="float")

    assert [item.embedding for item in result.data] == [[0.1, 0.2], [0.3, 0.4]]


def test_sdk_lists_the_models_the_caller_may_use(catalog, client):
    models = client.models.list()

    ids = [model.id for model in models]
    assert ids == ["claude-chat", "cohere-embed", "iris", "llama-sm", "mme-churn", "titan-embed"]
    chat = next(model for model in models if model.id == "claude-chat")
    assert chat.object == "model"
    assert chat.owned_by == "sluice"
    assert chat.description == "General chat on Bedrock (Converse)"


def test_sdk_retrieves_one_model(catalog, client):
    model = client.models.retrieve("iris")

    assert model.id == "iris"
    assert model.invoke_path == "/v1/models/iris/invoke"


def test_sdk_raises_not_found_for_an_unknown_model(catalog, client):
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])

    assert caught.value.status_code == 404
    assert caught.value.code == "model_not_found"
    assert caught.value.param == "model"
    assert "gpt-4o" in caught.value.message
    assert caught.value.response.headers["x-request-id"]


def test_sdk_raises_rate_limit_error_when_the_backend_throttles(catalog, stubbed, client):
    stubbed("bedrock-runtime").add_client_error("converse", "ThrottlingException", "Too many requests.", 429)

    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="claude-chat", messages=[{"role": "user", "content": "hi"}])

    assert caught.value.status_code == 429
    assert caught.value.code == "throttled"
    assert caught.value.type == "rate_limit_error"
    assert caught.value.response.headers["retry-after"] == "2"


@pytest.mark.parametrize(
    ("kwargs", "error_class", "status"),
    [
        ({"model": "private-model"}, openai.PermissionDeniedError, 403),
        ({"model": "iris"}, openai.BadRequestError, 400),
        ({"model": "claude-chat", "max_tokens": 100_000}, openai.BadRequestError, 400),
        ({"model": "claude-chat", "temperature": 5}, openai.UnprocessableEntityError, 422),
    ],
)
def test_sdk_raises_the_matching_error_class(catalog, client, kwargs, error_class, status):
    with pytest.raises(error_class) as caught:
        client.chat.completions.create(messages=[{"role": "user", "content": "hi"}], **kwargs)

    assert caught.value.status_code == status


def test_sdk_with_a_wrong_key_is_refused_before_the_function(catalog, gateway):
    wrong = openai.OpenAI(
        base_url=BASE_URL,
        api_key="sk-sluice-wrong",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(gateway)),
    )

    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    assert gateway.events == []

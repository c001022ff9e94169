"""Local mode's AWS runtimes, driven by real boto3 clients: the SageMaker runtime in front of real iris model
processes (v1 and v2, started once for the module), and the emulated Bedrock runtime."""

from __future__ import annotations

import functools
import json
import math
import random
import socket
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError

from sluice_local.bedrock import EMULATED_HEADER, REPLY_PREFIX, LocalBedrock, estimate_tokens
from sluice_local.models import ModelStartError, RunningModel, start_model
from sluice_local.sagemaker_runtime import LocalSageMakerRuntime, Variant

SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.7, 3.0, 5.2, 2.3]
ACCOUNT = "123456789012"
CHAT_MODEL = "anthropic.claude-3-5-haiku-20241022-v1:0"
TITAN = "amazon.titan-embed-text-v2:0"
COHERE = "cohere.embed-english-v3"
# One attempt: an error must surface as the server sent it, not after botocore's retries.
NO_RETRIES = Config(retries={"total_max_attempts": 1}, read_timeout=10, connect_timeout=2)


def _client(service: str, url: str) -> Any:
    return boto3.session.Session().client(service, endpoint_url=url, region_name="us-east-1", config=NO_RETRIES)


def _instances(*rows: list[float]) -> bytes:
    return json.dumps({"instances": list(rows)}).encode()


# --- the SageMaker runtime and its models ----------------------------------------------------------------


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def models(model_root) -> Iterator[dict[str, RunningModel]]:
    with ThreadPoolExecutor(2) as pool:
        started = list(pool.map(lambda version: start_model(version, model_root / version), ["v1", "v2"]))
    yield {model.version: model for model in started}
    for model in started:
        assert model.stop() == 0, model.log_tail()


@pytest.fixture(scope="module")
def endpoints(models) -> dict[str, list[Variant]]:
    """What the runtime resolves endpoints from (the embedded SageMaker's endpoint configs, in local mode)."""
    return {"iris": [Variant("v1", 0.8, models["v1"].url), Variant("v2", 0.2, models["v2"].url)]}


@pytest.fixture(scope="module")
def runtime(endpoints) -> Iterator[LocalSageMakerRuntime]:
    server = LocalSageMakerRuntime(endpoints.get)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sagemaker(runtime) -> Any:
    return _client("sagemaker-runtime", runtime.url)


def _invoke(client: Any, body: bytes, **params: str) -> tuple[dict[str, Any], Any]:
    params = {"EndpointName": "iris", "ContentType": "application/json", "Accept": "application/json", **params}
    response = client.invoke_endpoint(Body=body, **params)
    raw = response["Body"].read()
    return response, json.loads(raw)


def test_setosa_sample_returns_probabilities_summing_to_one(sagemaker):
    response, answer = _invoke(sagemaker, _instances(SETOSA))

    assert response["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert response["ContentType"] == "application/json"
    assert response["InvokedProductionVariant"] in ("v1", "v2")
    assert answer["model_version"] == response["InvokedProductionVariant"]
    [prediction] = answer["predictions"]
    assert prediction["label"] == "setosa"
    assert math.isclose(sum(prediction["probabilities"].values()), 1.0, abs_tol=1e-9)


def test_csv_body_is_forwarded_with_its_content_type(sagemaker):
    csv = "\n".join(",".join(str(v) for v in row) for row in (SETOSA, VIRGINICA)).encode()

    _, answer = _invoke(sagemaker, csv, ContentType="text/csv", TargetVariant="v1")

    assert [p["label"] for p in answer["predictions"]] == ["setosa", "virginica"]


@pytest.mark.parametrize("variant", ["v1", "v2"])
def test_target_variant_pins_the_variant_and_its_model(sagemaker, variant):
    for _ in range(5):
        response, answer = _invoke(sagemaker, _instances(SETOSA), TargetVariant=variant)
        assert response["InvokedProductionVariant"] == variant
        assert answer["model_version"] == variant


def test_traffic_splits_by_variant_weight(endpoints):
    server = LocalSageMakerRuntime(endpoints.get, rng=random.Random(20240611))
    server.start()
    try:
        client = _client("sagemaker-runtime", server.url)
        seen: Counter[str] = Counter()
        for _ in range(400):
            response, answer = _invoke(client, _instances(SETOSA))
            assert answer["model_version"] == response["InvokedProductionVariant"]
            seen[response["InvokedProductionVariant"]] += 1
    finally:
        server.stop()

    assert set(seen) == {"v1", "v2"}
    # 80/20: 320 expected; the standard deviation of the count is 8.
    assert abs(seen["v1"] - 320) <= 40, seen


def test_zero_weight_variant_serves_only_when_pinned(models):
    variants = {"iris-canary": [Variant("main", 1, models["v1"].url), Variant("canary", 0, models["v2"].url)]}
    server = LocalSageMakerRuntime(variants.get, rng=random.Random(1))
    server.start()
    try:
        client = _client("sagemaker-runtime", server.url)
        drawn = {_invoke(client, _instances(SETOSA), EndpointName="iris-canary")[1]["model_version"] for _ in range(30)}
        pinned = _invoke(client, _instances(SETOSA), EndpointName="iris-canary", TargetVariant="canary")
    finally:
        server.stop()

    assert drawn == {"v1"}
    assert pinned[0]["InvokedProductionVariant"] == "canary"
    assert pinned[1]["model_version"] == "v2"


def test_model_client_error_becomes_model_error_with_its_status_and_message(sagemaker):
    with pytest.raises(ClientError) as caught:
        sagemaker.invoke_endpoint(
            EndpointName="iris", Body=_instances([1.0, 2.0, 3.0]), ContentType="application/json", TargetVariant="v2"
        )

    response = caught.value.response
    assert response["Error"]["Code"] == "ModelError"
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert response["OriginalStatusCode"] == 400
    assert "expected 4 features" in json.loads(response["OriginalMessage"])["error"]
    assert response["LogStreamArn"] == f"arn:aws:logs:us-east-1:{ACCOUNT}:log-group:/aws/sagemaker/Endpoints/iris"
    assert response["Error"]["Message"].startswith("Received client error (400) from primary with message")
    assert isinstance(caught.value, sagemaker.exceptions.ModelError)


def test_unsupported_content_type_reaches_the_model_and_comes_back_as_415(sagemaker):
    with pytest.raises(sagemaker.exceptions.ModelError) as caught:
        sagemaker.invoke_endpoint(EndpointName="iris", Body=b"<xml/>", ContentType="application/xml")

    assert caught.value.response["OriginalStatusCode"] == 415
    assert "unsupported Content-Type" in caught.value.response["OriginalMessage"]


def test_unknown_endpoint_is_a_validation_error_not_found(sagemaker):
    with pytest.raises(sagemaker.exceptions.ValidationError) as caught:
        sagemaker.invoke_endpoint(EndpointName="no-such-endpoint", Body=_instances(SETOSA))

    error = caught.value.response["Error"]
    assert error["Code"] == "ValidationError"
    assert error["Message"] == f"Endpoint no-such-endpoint of account {ACCOUNT} not found."
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_unknown_target_variant_is_a_validation_error_naming_the_variants(sagemaker):
    with pytest.raises(sagemaker.exceptions.ValidationError) as caught:
        sagemaker.invoke_endpoint(EndpointName="iris", Body=_instances(SETOSA), TargetVariant="v3")

    message = caught.value.response["Error"]["Message"]
    assert "Variant v3 not found for endpoint iris" in message
    assert "v1, v2" in message


def test_inference_components_are_refused_unless_resolved(sagemaker):
    with pytest.raises(sagemaker.exceptions.ValidationError) as caught:
        sagemaker.invoke_endpoint(EndpointName="iris", Body=_instances(SETOSA), InferenceComponentName="ic-1")

    assert "not emulated locally" in caught.value.response["Error"]["Message"]


def test_inference_component_is_served_by_the_resolved_model(endpoints, models):
    components = {("iris", "iris-v2-component"): Variant("v2", 1, models["v2"].url)}
    server = LocalSageMakerRuntime(endpoints.get, resolve_component=lambda e, c: components.get((e, c)))
    server.start()
    try:
        client = _client("sagemaker-runtime", server.url)
        _, answer = _invoke(client, _instances(SETOSA), InferenceComponentName="iris-v2-component")
        with pytest.raises(client.exceptions.ValidationError):
            client.invoke_endpoint(EndpointName="iris", Body=_instances(SETOSA), InferenceComponentName="other")
    finally:
        server.stop()

    assert answer["model_version"] == "v2"


def test_model_slower_than_the_timeout_is_a_model_error():
    # A listening socket that never answers: connections complete, the invocation waits for nothing.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        server = LocalSageMakerRuntime({"slow": [Variant("only", 1, url)]}.get, model_timeout=0.3)
        server.start()
        try:
            client = _client("sagemaker-runtime", server.url)
            with pytest.raises(client.exceptions.ModelError) as caught:
                client.invoke_endpoint(EndpointName="slow", Body=_instances(SETOSA), ContentType="application/json")
        finally:
            server.stop()

    assert "timed out while waiting for a response" in caught.value.response["Error"]["Message"]
    assert "OriginalStatusCode" not in caught.value.response


def test_oversized_payload_is_refused_before_reaching_the_model(sagemaker):
    with pytest.raises(sagemaker.exceptions.ValidationError) as caught:
        sagemaker.invoke_endpoint(EndpointName="iris", Body=b" " * (6 * 1024 * 1024 + 1))

    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert "exceeds the limit" in caught.value.response["Error"]["Message"]


def test_stopped_model_process_is_service_unavailable(model_root, endpoints):
    model = start_model("v1", model_root / "v1-spare")
    variants = {"iris-spare": [Variant("only", 1, model.url)]}
    server = LocalSageMakerRuntime(variants.get)
    server.start()
    try:
        client = _client("sagemaker-runtime", server.url)
        _invoke(client, _instances(SETOSA), EndpointName="iris-spare")  # leaves a pooled keep-alive connection
        assert model.stop() == 0

        with pytest.raises(client.exceptions.ServiceUnavailable) as caught:
            client.invoke_endpoint(EndpointName="iris-spare", Body=_instances(SETOSA), ContentType="application/json")
    finally:
        model.stop()
        server.stop()

    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 503
    assert "not reachable" in caught.value.response["Error"]["Message"]


def test_stopped_runtime_answers_nothing_more_on_open_connections(endpoints):
    server = LocalSageMakerRuntime(endpoints.get)
    server.start()
    client = _client("sagemaker-runtime", server.url)
    _invoke(client, _instances(SETOSA))

    server.stop()

    with pytest.raises((EndpointConnectionError, ConnectionClosedError)):
        client.invoke_endpoint(EndpointName="iris", Body=_instances(SETOSA), ContentType="application/json")


def test_model_dir_of_another_version_is_refused_with_the_server_log(models, model_root):
    with pytest.raises(ModelStartError) as caught:
        start_model("v2", model_root / "v1", timeout=20)

    assert "exited with code 1" in str(caught.value)
    assert "holds model version v1, but version v2 was requested" in str(caught.value)


def test_runtimes_and_models_bind_loopback_only(model_root):
    with pytest.raises(ValueError, match="loopback"):
        LocalSageMakerRuntime({}.get, host="0.0.0.0")
    with pytest.raises(ValueError, match="loopback"):
        LocalBedrock(host="192.168.1.10")
    with pytest.raises(ValueError, match="loopback"):
        LocalBedrock().start("0.0.0.0", 0)
    with pytest.raises(ValueError, match="loopback"):
        start_model("v1", model_root / "v1", host="0.0.0.0")


# --- the emulated Bedrock runtime ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bedrock_server() -> Iterator[LocalBedrock]:
    server = LocalBedrock()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bedrock(bedrock_server) -> Any:
    return _client("bedrock-runtime", bedrock_server.url)


def _headers(response: dict[str, Any]) -> dict[str, str]:
    return response["ResponseMetadata"]["HTTPHeaders"]


def _embed(client: Any, model_id: str, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    response = client.invoke_model(modelId=model_id, body=json.dumps(body), contentType="application/json")
    return json.loads(response["body"].read()), _headers(response)


def test_converse_reply_is_labelled_emulated_with_token_counts_from_the_input(bedrock):
    system = [{"text": "You are terse."}]
    messages = [
        {"role": "user", "content": [{"text": "Hi"}]},
        {"role": "assistant", "content": [{"text": "Hello."}]},
        {"role": "user", "content": [{"text": "What is the capital of France?"}]},
    ]

    response = bedrock.converse(modelId=CHAT_MODEL, system=system, messages=messages)

    [block] = response["output"]["message"]["content"]
    assert response["output"]["message"]["role"] == "assistant"
    assert block["text"] == REPLY_PREFIX + "What is the capital of France?"
    assert response["stopReason"] == "end_turn"
    input_chars = len("You are terse.") + len("Hi") + len("Hello.") + len("What is the capital of France?")
    assert response["usage"] == {
        "inputTokens": math.ceil(input_chars / 4),
        "outputTokens": math.ceil(len(block["text"]) / 4),
        "totalTokens": math.ceil(input_chars / 4) + math.ceil(len(block["text"]) / 4),
    }
    assert response["metrics"]["latencyMs"] >= 0
    assert _headers(response)[EMULATED_HEADER.lower()] == "bedrock"


def test_converse_max_tokens_truncates_the_reply(bedrock):
    response = bedrock.converse(
        modelId=CHAT_MODEL,
        messages=[{"role": "user", "content": [{"text": "Tell me a long story about a lighthouse keeper."}]}],
        inferenceConfig={"maxTokens": 3},
    )

    text = response["output"]["message"]["content"][0]["text"]
    assert response["stopReason"] == "max_tokens"
    assert text == REPLY_PREFIX[:12]
    assert response["usage"]["outputTokens"] == 3


def test_converse_stop_sequence_cuts_the_reply(bedrock):
    response = bedrock.converse(
        modelId=CHAT_MODEL,
        messages=[{"role": "user", "content": [{"text": "one. two. three."}]}],
        inferenceConfig={"stopSequences": ["two"]},
    )

    assert response["stopReason"] == "stop_sequence"
    assert response["output"]["message"]["content"][0]["text"] == REPLY_PREFIX + "one. "


def test_converse_quotes_long_messages_cut_short(bedrock):
    long_text = "word " * 200

    response = bedrock.converse(modelId=CHAT_MODEL, messages=[{"role": "user", "content": [{"text": long_text}]}])

    text = response["output"]["message"]["content"][0]["text"]
    assert len(text) == len(REPLY_PREFIX) + 200
    assert text.endswith("…")
    assert response["usage"]["inputTokens"] == estimate_tokens(long_text)


def test_converse_refuses_a_conversation_not_starting_with_the_user(bedrock):
    with pytest.raises(bedrock.exceptions.ValidationException) as caught:
        bedrock.converse(modelId=CHAT_MODEL, messages=[{"role": "assistant", "content": [{"text": "Hi"}]}])

    assert "must start with a user message" in caught.value.response["Error"]["Message"]
    assert _headers(caught.value.response)[EMULATED_HEADER.lower()] == "bedrock"


def test_converse_refuses_embedding_models(bedrock):
    with pytest.raises(bedrock.exceptions.ValidationException):
        bedrock.converse(modelId=TITAN, messages=[{"role": "user", "content": [{"text": "Hi"}]}])


def test_titan_embeddings_have_the_requested_dimensions_and_are_deterministic(bedrock):
    text = "The quick brown fox jumps over the lazy dog"

    answer, headers = _embed(bedrock, TITAN, {"inputText": text})
    again, _ = _embed(bedrock, TITAN, {"inputText": text})
    other, _ = _embed(bedrock, TITAN, {"inputText": "Something else entirely"})
    small, _ = _embed(bedrock, TITAN, {"inputText": text, "dimensions": 256})
    medium, _ = _embed(bedrock, TITAN, {"inputText": text, "dimensions": 512, "normalize": True})

    assert len(answer["embedding"]) == 1024
    assert len(small["embedding"]) == 256
    assert len(medium["embedding"]) == 512
    assert math.isclose(math.hypot(*answer["embedding"]), 1.0, rel_tol=1e-9)
    assert answer["embedding"] == again["embedding"]
    assert answer["embedding"] != other["embedding"]
    assert answer["inputTextTokenCount"] == math.ceil(len(text) / 4)
    assert headers["x-amzn-bedrock-input-token-count"] == str(answer["inputTextTokenCount"])
    assert headers["x-amzn-bedrock-output-token-count"] == "0"
    assert headers[EMULATED_HEADER.lower()] == "bedrock"


def test_titan_refuses_unsupported_dimensions(bedrock):
    with pytest.raises(bedrock.exceptions.ValidationException) as caught:
        _embed(bedrock, TITAN, {"inputText": "hello", "dimensions": 300})

    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "dimensions" in caught.value.response["Error"]["Message"]


def test_cohere_embeddings_have_1024_dimensions_per_text(bedrock):
    texts = ["first document", "second document", "first document"]

    answer, headers = _embed(bedrock, COHERE, {"texts": texts, "input_type": "search_document"})
    query, _ = _embed(bedrock, COHERE, {"texts": ["first document"], "input_type": "search_query"})
    by_type, _ = _embed(
        bedrock, COHERE, {"texts": ["first document"], "input_type": "search_query", "embedding_types": ["float"]}
    )

    assert answer["response_type"] == "embeddings_floats"
    assert answer["texts"] == texts
    assert answer["id"]
    assert [len(vector) for vector in answer["embeddings"]] == [1024, 1024, 1024]
    assert answer["embeddings"][0] == answer["embeddings"][2] == query["embeddings"][0]
    assert answer["embeddings"][0] != answer["embeddings"][1]
    assert headers["x-amzn-bedrock-input-token-count"] == str(sum(math.ceil(len(t) / 4) for t in texts))
    assert by_type["response_type"] == "embeddings_by_type"
    assert by_type["embeddings"]["float"] == query["embeddings"]


def test_texts_sharing_words_have_closer_embeddings(bedrock):
    def vector(text: str) -> list[float]:
        return _embed(bedrock, TITAN, {"inputText": text})[0]["embedding"]

    anchor = vector("the cat sat on the mat")
    similar = vector("a cat sat on a mat")
    unrelated = vector("quarterly revenue grew by nine percent")

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(anchor, similar) > cosine(anchor, unrelated) + 0.3


def test_invoke_with_other_model_bodies_explains_only_embeddings_are_emulated(bedrock):
    body = {
        "anthropic_version": "bedrock-2023-05-31",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": "Hi"}],
    }

    with pytest.raises(bedrock.exceptions.ValidationException) as caught:
        _embed(bedrock, CHAT_MODEL, body)

    message = caught.value.response["Error"]["Message"]
    assert "Titan Text Embeddings v2" in message
    assert "Cohere Embed" in message


# --- Sluice's own provider code, pointed at the runtimes by environment variables only --------------------


@pytest.fixture
def sluice_clients(monkeypatch, runtime, bedrock_server):
    """Sluice's client factory, fresh (its cache must not hold clients built without the endpoint variables)."""
    from sluice import clients

    monkeypatch.setenv("AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME", runtime.url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", bedrock_server.url)
    monkeypatch.setattr(clients, "get", functools.cache(clients.get.__wrapped__))


def test_sluice_providers_reach_the_runtimes_through_the_endpoint_variables(sluice_clients):
    from sluice.catalog.models import BedrockBackend, SageMakerBackend
    from sluice.errors import BackendMisconfigured, ModelRejectedInput
    from sluice.providers import bedrock, sagemaker

    iris = SageMakerBackend(provider="sagemaker", endpoint_name="iris", target_variant="v2")
    result = sagemaker.invoke_endpoint(iris, _instances(SETOSA), "application/json", 10)
    assert result.variant == "v2"
    assert json.loads(result.body)["model_version"] == "v2"

    with pytest.raises(ModelRejectedInput) as failed:
        sagemaker.invoke_endpoint(iris, _instances([1.0]), "application/json", 10)
    assert failed.value.status == 400
    assert "expected 4 features" in failed.value.message
    assert failed.value.details["original_status_code"] == 400

    missing = SageMakerBackend(provider="sagemaker", endpoint_name="gone")
    with pytest.raises(BackendMisconfigured):
        sagemaker.invoke_endpoint(missing, _instances(SETOSA), "application/json", 10)

    chat = bedrock.converse(
        BedrockBackend(provider="bedrock", model_id=CHAT_MODEL),
        {"messages": [{"role": "user", "content": [{"text": "ping"}]}]},
        10,
    )
    assert chat.body["output"]["message"]["content"][0]["text"] == REPLY_PREFIX + "ping"
    assert chat.input_tokens == 1

    titan = BedrockBackend(provider="bedrock", model_id=TITAN, embedding_format="titan-v2")
    embedded = bedrock.invoke_model(titan, b'{"inputText": "hello there"}', "application/json", "application/json", 10)
    assert embedded.input_tokens == 3
    assert len(json.loads(embedded.body)["embedding"]) == 1024

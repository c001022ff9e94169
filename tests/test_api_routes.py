"""The API's routes on their happy paths: sample events in, API Gateway proxy responses out.

The handler and the domain library run for real against the fixture catalog in (moto) SSM; only the
Bedrock and SageMaker runtime clients are stubbed (botocore Stubber), with the exact parameters each
call must carry.
"""

from __future__ import annotations

import base64
import json
import struct

import pytest

from tests.api_support import (
    BATCH_ROLE_ARN,
    bedrock_invoke_answer,
    body_of,
    call,
    converse_answer,
    event,
    header,
    request_id_of,
    sagemaker_answer,
    set_header,
    store_catalog,
)

IRIS_ROW = b'{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
CLAUDE_ID = "us.anthropic.claude-3-5-haiku-20241022-v1:0"


# --- health, models, docs ---------------------------------------------------------------------------


def test_health_reports_status_and_version(lambda_context):
    response = call(event("health"), lambda_context)

    assert response["statusCode"] == 200
    assert body_of(response) == {"status": "ok", "version": "0.1.0"}


def test_models_list_shows_only_models_the_tenant_may_use(catalog, lambda_context):
    response = call(event("models-list"), lambda_context)

    assert response["statusCode"] == 200
    listing = body_of(response)
    assert listing["object"] == "list"
    assert [card["id"] for card in listing["data"]] == [
        "claude-chat",
        "cohere-embed",
        "iris",
        "llama-sm",
        "mme-churn",  # allowed to tenant acme by name
        "titan-embed",
    ]  # private-model (globex only) is absent


def test_models_list_cards_tell_a_newcomer_how_to_call_each_model(catalog, lambda_context):
    cards = {card["id"]: card for card in body_of(call(event("models-list"), lambda_context))["data"]}

    chat = cards["claude-chat"]
    assert chat["object"] == "model"
    assert chat["description"] == "General chat on Bedrock (Converse)"
    assert chat["task"] == "chat"
    assert chat["provider"] == "bedrock"
    assert chat["invoke_path"] == "/v1/chat/completions"
    assert chat["example_request"] == {"model": "claude-chat", "messages": [{"role": "user", "content": "Hello"}]}
    assert chat["limits"]["max_input_tokens"] == 1000
    assert chat["limits"]["max_output_tokens"] == 512
    assert chat["limits"]["timeout_seconds"] == 20
    assert cards["titan-embed"]["invoke_path"] == "/v1/embeddings"
    assert cards["titan-embed"]["example_request"] is None
    assert cards["iris"]["invoke_path"] == "/v1/models/iris/invoke"
    assert cards["iris"]["example_request"] == {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    assert all(card["description"] for card in cards.values())


def test_models_list_for_another_tenant_shows_its_private_model_but_not_acmes(catalog, lambda_context):
    evt = event("models-list")
    evt["requestContext"]["authorizer"].update(tenant="globex", principalId="globex", key_id="key_globex000001")

    ids = [card["id"] for card in body_of(call(evt, lambda_context))["data"]]

    assert "private-model" in ids
    assert "mme-churn" not in ids


def _as_iam_caller(evt: dict, user_arn: str) -> dict:
    """The event as a SigV4-signed request would arrive: an IAM identity, no authorizer context."""
    del evt["requestContext"]["authorizer"]
    evt["requestContext"]["identity"] = event("invoke-iam-caller")["requestContext"]["identity"]
    evt["requestContext"]["identity"]["userArn"] = user_arn
    return evt


def test_models_list_matches_iam_callers_against_arn_globs(catalog, lambda_context):
    batch = _as_iam_caller(event("models-list"), BATCH_ROLE_ARN)
    other = _as_iam_caller(event("models-list"), "arn:aws:iam::123456789012:role/analytics")

    batch_ids = [card["id"] for card in body_of(call(batch, lambda_context))["data"]]
    other_ids = [card["id"] for card in body_of(call(other, lambda_context))["data"]]

    assert "mme-churn" in batch_ids  # arn:aws:iam::123456789012:role/batch-* matches role/batch-scoring
    assert "mme-churn" not in other_ids
    assert "claude-chat" in other_ids  # "*" models are for every authenticated caller
    assert "private-model" not in batch_ids


def test_model_get_returns_the_card_with_limits_and_defaults(catalog, lambda_context):
    response = call(event("model-get"), lambda_context)

    assert response["statusCode"] == 200
    card = body_of(response)
    assert card["id"] == "iris"
    assert card["task"] == "predict"
    assert card["provider"] == "sagemaker"
    assert card["description"].startswith("Iris species classifier")
    assert card["invoke_path"] == "/v1/models/iris/invoke"
    assert card["example_request"] == {"instances": [[5.1, 3.5, 1.4, 0.2]]}
    # max_payload_bytes from the catalog, timeout from the stack default (25 s).
    assert card["limits"] == {
        "max_payload_bytes": 1024,
        "max_input_tokens": None,
        "max_output_tokens": None,
        "timeout_seconds": 25,
    }


def test_openapi_json_is_served_at_docs_and_lists_every_route(lambda_context):
    response = call(event("docs"), lambda_context)

    assert response["statusCode"] == 200
    spec = body_of(response)
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["title"] == "Sluice"
    assert spec["info"]["version"] == "0.1.0"
    paths = spec["paths"]
    assert set(paths["/v1/health"]) == {"get"}
    assert set(paths["/v1/models"]) == {"get"}
    assert set(paths["/v1/models/{model}"]) == {"get"}
    assert set(paths["/v1/models/{model}/invoke"]) == {"post"}
    assert set(paths["/v1/chat/completions"]) == {"post"}
    assert set(paths["/v1/embeddings"]) == {"post"}
    # Request bodies are documented from the OpenAI-compatible models.
    schemas = spec["components"]["schemas"]
    assert {"ChatCompletionRequest", "EmbeddingRequest", "ChatCompletion", "EmbeddingList"} <= set(schemas)


# --- native invoke: SageMaker -----------------------------------------------------------------------


def test_invoke_sagemaker_json_returns_output_with_request_facts(catalog, stubbed, lambda_context):
    sagemaker = stubbed("sagemaker-runtime")
    sagemaker.add_response(
        "invoke_endpoint",
        sagemaker_answer({"predictions": [{"label": "setosa", "score": 0.97}]}, variant="blue"),
        expected_params={
            "EndpointName": "sluice-iris",
            "Body": IRIS_ROW,
            "ContentType": "application/json",
            "Accept": "application/json",
        },
    )
    evt = event("invoke-sagemaker")

    response = call(evt, lambda_context)

    assert response["statusCode"] == 200
    result = body_of(response)
    assert result["id"] == request_id_of(evt)
    assert result["model"] == "iris"
    assert result["provider"] == "sagemaker"
    assert result["target"] == {
        "endpoint_name": "sluice-iris",
        "target_model": None,
        "target_variant": None,
        "inference_component_name": None,
    }
    assert result["variant"] == "blue"  # InvokedProductionVariant
    assert result["content_type"] == "application/json"
    assert result["output_encoding"] == "json"
    assert result["output"] == {"predictions": [{"label": "setosa", "score": 0.97}]}
    assert result["usage"] == {"input_tokens": None, "output_tokens": None, "total_tokens": None}
    assert result["latency_ms"] >= 0
    assert result["backend_latency_ms"] >= 0
    # A provisioned endpoint costs its share of instance time: backend seconds x 0.115 USD/h.
    expected_cost = result["backend_latency_ms"] / 1000 / 3600 * 0.115
    assert result["estimated_cost_usd"] == pytest.approx(expected_cost, abs=1e-10)


def test_invoke_sagemaker_csv_passes_text_csv_through_and_returns_text(catalog, stubbed, lambda_context):
    evt = event("invoke-sagemaker-csv")
    stubbed("sagemaker-runtime").add_response(
        "invoke_endpoint",
        sagemaker_answer("setosa\nvirginica\n", content_type="text/csv; charset=utf-8", variant="green"),
        expected_params={
            "EndpointName": "sluice-iris",
            "Body": evt["body"].encode(),
            "ContentType": "text/csv",
            "Accept": "application/json",
        },
    )

    response = call(evt, lambda_context)

    assert response["statusCode"] == 200
    result = body_of(response)
    assert result["content_type"] == "text/csv; charset=utf-8"
    assert result["output_encoding"] == "text"
    assert result["output"] == "setosa\nvirginica\n"
    assert result["variant"] == "green"


def test_invoke_decodes_a_binary_body_api_gateway_sent_base64_encoded(catalog, stubbed, lambda_context):
    # application/x-npy is one of the API's binary media types: API Gateway base64-encodes such bodies.
    catalog["models"]["iris"]["backend"]["extra_content_types"] = ["text/csv", "application/x-npy"]
    store_catalog(catalog)
    npy = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (1, 4), }\xff\xfe"
    evt = event("invoke-sagemaker", headers={"Content-Type": "application/x-npy"})
    evt["body"] = base64.b64encode(npy).decode()
    evt["isBase64Encoded"] = True
    set_header(evt, "Content-Length", str(len(npy)))
    stubbed("sagemaker-runtime").add_response(
        "invoke_endpoint",
        sagemaker_answer({"predictions": [[0.97, 0.02, 0.01]]}),
        expected_params={
            "EndpointName": "sluice-iris",
            "Body": npy,
            "ContentType": "application/x-npy",
            "Accept": "application/json",
        },
    )

    response = call(evt, lambda_context)

    assert response["statusCode"] == 200
    assert body_of(response)["output"] == {"predictions": [[0.97, 0.02, 0.01]]}


def test_invoke_returns_binary_model_output_as_base64(catalog, stubbed, lambda_context):
    raw = bytes([0, 159, 146, 150, 255])
    stubbed("sagemaker-runtime").add_response(
        "invoke_endpoint", sagemaker_answer(raw, content_type="application/x-npy", variant="blue")
    )

    result = body_of(call(event("invoke-sagemaker"), lambda_context))

    assert result["output_encoding"] == "base64"
    assert base64.b64decode(result["output"]) == raw


def test_invoke_pins_the_variant_from_the_target_variant_header(catalog, stubbed, lambda_context):
    stubbed("sagemaker-runtime").add_response(
        "invoke_endpoint",
        sagemaker_answer({"predictions": [[0.9, 0.05, 0.05]]}, variant="challenger"),
        expected_params={
            "EndpointName": "sluice-iris",
            "Body": IRIS_ROW,
            "ContentType": "application/json",
            "Accept": "application/json",
            "TargetVariant": "challenger",
        },
    )

    response = call(event("invoke-sagemaker-variant"), lambda_context)

    assert response["statusCode"] == 200
    assert body_of(response)["variant"] == "challenger"


def test_invoke_reads_the_target_variant_header_in_lower_case(catalog, stubbed, lambda_context):
    evt = event(
        "invoke-sagemaker-variant", headers={"X-Sluice-Target-Variant": None, "x-sluice-target-variant": "blue"}
    )
    stubbed("sagemaker-runtime").add_response(
        "invoke_endpoint",
        sagemaker_answer({"predictions": [[0.9, 0.05, 0.05]]}, variant="blue"),
        expected_params={
            "EndpointName": "sluice-iris",
            "Body": IRIS_ROW,
            "ContentType": "application/json",
            "Accept": "application/json",
            "TargetVariant": "blue",
        },
    )

    assert body_of(call(evt, lambda_context))["variant"] == "blue"


def test_iam_caller_invokes_a_multi_model_endpoint_with_target_model_and_variant(catalog, stubbed, lambda_context):
    evt = event("invoke-iam-caller")
    assert "authorizer" not in evt["requestContext"]
    assert evt["requestContext"]["identity"]["userArn"] == BATCH_ROLE_ARN
    stubbed("sagemaker-runtime").add_response(
        "invoke_endpoint",
        sagemaker_answer({"churn_probability": 0.31}, variant="blue"),
        expected_params={
            "EndpointName": "sluice-mme",
            "Body": evt["body"].encode(),
            "ContentType": "application/json",
            "Accept": "application/json",
            "TargetModel": "churn-v3.tar.gz",
            "TargetVariant": "blue",
        },
    )

    response = call(evt, lambda_context)

    assert response["statusCode"] == 200
    result = body_of(response)
    assert result["output"] == {"churn_probability": 0.31}
    assert result["target"] == {
        "endpoint_name": "sluice-mme",
        "target_model": "churn-v3.tar.gz",
        "target_variant": "blue",
        "inference_component_name": None,
    }
    assert result["variant"] == "blue"
    assert result["estimated_cost_usd"] == 0  # no pricing in the catalog entry


def test_target_variant_header_overrides_the_catalog_variant(catalog, stubbed, lambda_context):
    evt = event("invoke-iam-caller", headers={"X-Sluice-Target-Variant": "green"})
    stubbed("sagemaker-runtime").add_response(
        "invoke_endpoint",
        sagemaker_answer({"churn_probability": 0.29}, variant="green"),
        expected_params={
            "EndpointName": "sluice-mme",
            "Body": evt["body"].encode(),
            "ContentType": "application/json",
            "Accept": "application/json",
            "TargetModel": "churn-v3.tar.gz",
            "TargetVariant": "green",
        },
    )

    assert body_of(call(evt, lambda_context))["variant"] == "green"


# --- native invoke: Bedrock Converse ----------------------------------------------------------------


def test_invoke_bedrock_chat_model_sends_the_converse_body_and_returns_converse_output(
    catalog, stubbed, lambda_context
):
    evt = event("invoke-bedrock-converse")
    stubbed("bedrock-runtime").add_response(
        "converse",
        converse_answer("Red.", input_tokens=18, output_tokens=3, latency_ms=250),
        expected_params={
            "modelId": CLAUDE_ID,
            "system": [{"text": "You are a terse assistant."}],
            "messages": [{"role": "user", "content": [{"text": "Name one primary colour."}]}],
            "inferenceConfig": {"maxTokens": 64, "temperature": 0.2},
        },
    )

    response = call(evt, lambda_context)

    assert response["statusCode"] == 200
    result = body_of(response)
    assert result["id"] == request_id_of(evt)
    assert result["model"] == "claude-chat"
    assert result["provider"] == "bedrock"
    assert result["target"] == {"model_id": CLAUDE_ID}
    assert result["variant"] is None
    assert result["output_encoding"] == "json"
    assert result["output"]["output"]["message"]["content"] == [{"text": "Red."}]
    assert result["output"]["stopReason"] == "end_turn"
    assert "ResponseMetadata" not in result["output"]
    assert result["usage"] == {"input_tokens": 18, "output_tokens": 3, "total_tokens": 21}
    assert result["backend_latency_ms"] == 250  # Converse's own metrics.latencyMs
    # 18 input tokens at 0.0008/1k + 3 output tokens at 0.004/1k.
    assert result["estimated_cost_usd"] == pytest.approx(18 / 1000 * 0.0008 + 3 / 1000 * 0.004)


def test_invoke_bedrock_chat_model_applies_the_output_cap_when_none_is_asked(catalog, stubbed, lambda_context):
    body = {"messages": [{"role": "user", "content": [{"text": "Hi"}]}]}
    stubbed("bedrock-runtime").add_response(
        "converse",
        converse_answer("Hello!"),
        expected_params={
            "modelId": CLAUDE_ID,
            "messages": body["messages"],
            "inferenceConfig": {"maxTokens": 512},  # the catalog's max_output_tokens
        },
    )

    response = call(event("invoke-bedrock-converse", body=body), lambda_context)

    assert response["statusCode"] == 200


def test_invoke_bedrock_embedding_model_passes_the_native_body_and_reads_header_tokens(
    catalog, stubbed, lambda_context
):
    native = {"inputText": "hello world", "dimensions": 256}
    stubbed("bedrock-runtime").add_response(
        "invoke_model",
        bedrock_invoke_answer({"embedding": [0.1, 0.2], "inputTextTokenCount": 2}, input_tokens=2),
        expected_params={
            "modelId": "amazon.titan-embed-text-v2:0",
            "body": json.dumps(native).encode(),
            "contentType": "application/json",
            "accept": "application/json",
        },
    )
    evt = event("invoke-bedrock-converse", body=native)
    evt["path"] = "/v1/models/titan-embed/invoke"
    evt["pathParameters"] = {"model": "titan-embed"}

    response = call(evt, lambda_context)

    assert response["statusCode"] == 200
    result = body_of(response)
    assert result["output"] == {"embedding": [0.1, 0.2], "inputTextTokenCount": 2}
    assert result["usage"] == {"input_tokens": 2, "output_tokens": None, "total_tokens": 2}


# --- OpenAI chat completions ------------------------------------------------------------------------


def test_chat_completion_maps_converse_answer_to_openai_shape(catalog, stubbed, lambda_context):
    evt = event("chat-completions")
    stubbed("bedrock-runtime").add_response(
        "converse",
        converse_answer("The capital of France is Paris.", input_tokens=21, output_tokens=8, latency_ms=380),
        expected_params={
            "modelId": CLAUDE_ID,
            "system": [{"text": "You are a helpful assistant."}],
            "messages": [{"role": "user", "content": [{"text": "What is the capital of France?"}]}],
            "inferenceConfig": {"maxTokens": 100, "temperature": 0.3},
        },
    )

    response = call(evt, lambda_context)

    assert response["statusCode"] == 200
    completion = body_of(response)
    assert completion["id"] == f"chatcmpl-{request_id_of(evt)}"
    assert completion["object"] == "chat.completion"
    assert isinstance(completion["created"], int)
    assert completion["model"] == "claude-chat"
    assert completion["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "The capital of France is Paris."},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ]
    assert completion["usage"] == {"prompt_tokens": 21, "completion_tokens": 8, "total_tokens": 29}
    sluice = completion["sluice"]
    assert sluice["provider"] == "bedrock"
    assert sluice["target"] == {"model_id": CLAUDE_ID}
    assert sluice["backend_latency_ms"] == 380
    assert sluice["estimated_cost_usd"] == pytest.approx(21 / 1000 * 0.0008 + 8 / 1000 * 0.004)


def test_chat_completion_moves_system_messages_merges_roles_and_maps_sampling_options(catalog, stubbed, lambda_context):
    request = {
        "model": "claude-chat",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
            {"role": "user", "content": "Hello."},
            {"role": "user", "content": [{"type": "text", "text": "How are "}, {"type": "text", "text": "you?"}]},
            {"role": "assistant", "content": "Bien."},
            {"role": "assistant", "content": "Et vous ?"},
            {"role": "user", "content": "Fine.", "name": "bob"},
        ],
        "max_completion_tokens": 200,
        "max_tokens": 50,  # max_completion_tokens wins, as in OpenAI's API
        "temperature": 0.1,
        "top_p": 0.9,
        "stop": "END",
        "user": "user-1234",
        "presence_penalty": 0.5,  # unknown to Converse: ignored, as OpenAI-compatible servers do
    }
    stubbed("bedrock-runtime").add_response(
        "converse",
        converse_answer("Très bien."),
        expected_params={
            "modelId": CLAUDE_ID,
            "system": [{"text": "Be brief."}, {"text": "Answer in French."}],
            "messages": [
                {"role": "user", "content": [{"text": "Hello."}, {"text": "How are you?"}]},
                {"role": "assistant", "content": [{"text": "Bien."}, {"text": "Et vous ?"}]},
                {"role": "user", "content": [{"text": "Fine."}]},
            ],
            "inferenceConfig": {"maxTokens": 200, "temperature": 0.1, "topP": 0.9, "stopSequences": ["END"]},
        },
    )

    response = call(event("chat-completions", body=request), lambda_context)

    assert response["statusCode"] == 200
    assert body_of(response)["choices"][0]["message"]["content"] == "Très bien."


def test_chat_completion_sends_stop_lists_and_the_output_cap_by_default(catalog, stubbed, lambda_context):
    request = {"model": "claude-chat", "messages": [{"role": "user", "content": "Count."}], "stop": ["7", "8"]}
    stubbed("bedrock-runtime").add_response(
        "converse",
        converse_answer("1 2 3 4 5 6", stop_reason="stop_sequence"),
        expected_params={
            "modelId": CLAUDE_ID,
            "messages": [{"role": "user", "content": [{"text": "Count."}]}],
            "inferenceConfig": {"maxTokens": 512, "stopSequences": ["7", "8"]},
        },
    )

    completion = body_of(call(event("chat-completions", body=request), lambda_context))

    assert completion["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("content_filtered", "content_filter"),
        ("guardrail_intervened", "content_filter"),
        ("tool_use", "tool_calls"),
    ],
)
def test_chat_completion_maps_converse_stop_reason_to_finish_reason(
    catalog, stubbed, lambda_context, stop_reason, finish_reason
):
    stubbed("bedrock-runtime").add_response("converse", converse_answer("...", stop_reason=stop_reason))

    completion = body_of(call(event("chat-completions"), lambda_context))

    assert completion["choices"][0]["finish_reason"] == finish_reason


def test_chat_completion_joins_multiple_converse_text_blocks(catalog, stubbed, lambda_context):
    answer = converse_answer("ignored")
    answer["output"]["message"]["content"] = [{"text": "Paris"}, {"text": ", France."}]
    stubbed("bedrock-runtime").add_response("converse", answer)

    completion = body_of(call(event("chat-completions"), lambda_context))

    assert completion["choices"][0]["message"]["content"] == "Paris, France."


def test_chat_completion_to_a_sagemaker_openai_container(catalog, stubbed, lambda_context):
    evt = event("chat-completions-sagemaker")
    container_answer = {
        "id": "chatcmpl-lmi-1",
        "object": "chat.completion",
        "created": 1795456800,
        "model": "llama",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Water finds its way\nstones remember the current\nthe sea waits below",
                },
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 14, "completion_tokens": 19, "total_tokens": 33},
    }
    stubbed("sagemaker-runtime").add_response(
        "invoke_endpoint",
        sagemaker_answer(container_answer, variant="AllTraffic"),
        expected_params={
            "EndpointName": "sluice-llama",
            "Body": json.dumps(
                {
                    "model": "llama-sm",
                    "messages": [{"role": "user", "content": "Write a haiku about rivers."}],
                    "max_tokens": 128,
                    "temperature": 0.7,
                }
            ).encode(),
            "ContentType": "application/json",
            "Accept": "application/json",
            "InferenceComponentName": "llama-ic",
        },
    )

    response = call(evt, lambda_context)

    assert response["statusCode"] == 200
    completion = body_of(response)
    assert completion["id"] == f"chatcmpl-{request_id_of(evt)}"
    assert completion["model"] == "llama-sm"
    assert completion["choices"][0]["message"]["content"].startswith("Water finds its way")
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["usage"] == {"prompt_tokens": 14, "completion_tokens": 19, "total_tokens": 33}
    assert completion["sluice"]["provider"] == "sagemaker"
    assert completion["sluice"]["variant"] == "AllTraffic"
    assert completion["sluice"]["target"]["inference_component_name"] == "llama-ic"


def test_chat_completion_to_sagemaker_sends_the_output_cap_when_none_is_asked(catalog, stubbed, lambda_context):
    request = {"model": "llama-sm", "messages": [{"role": "user", "content": "Hi"}]}
    answer = {"choices": [{"message": {"role": "assistant", "content": "Hello"}, "finish_reason": "length"}]}
    stubbed("sagemaker-runtime").add_response(
        "invoke_endpoint",
        sagemaker_answer(answer),
        expected_params={
            "EndpointName": "sluice-llama",
            "Body": json.dumps({**request, "max_tokens": 256}).encode(),
            "ContentType": "application/json",
            "Accept": "application/json",
            "InferenceComponentName": "llama-ic",
        },
    )

    completion = body_of(call(event("chat-completions-sagemaker", body=request), lambda_context))

    assert completion["choices"][0]["finish_reason"] == "length"
    # The container reported no usage: zeros rather than a missing field the SDK needs.
    assert completion["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


# --- OpenAI embeddings ------------------------------------------------------------------------------

TITAN_VECTORS = [[0.5, -0.25, 0.125], [1.0, 0.0, -2.5]]
COHERE_VECTORS = [[0.25, 0.5], [-0.75, 1.5], [2.0, -0.125]]


def _titan_calls(stub, texts: list[str], vectors: list[list[float]], tokens: list[int], dimensions=None) -> None:
    for text, vector, count in zip(texts, vectors, tokens, strict=True):
        body = {"inputText": text} if dimensions is None else {"inputText": text, "dimensions": dimensions}
        stub.add_response(
            "invoke_model",
            bedrock_invoke_answer({"embedding": vector, "inputTextTokenCount": count}, input_tokens=count),
            expected_params={
                "modelId": "amazon.titan-embed-text-v2:0",
                "body": json.dumps(body).encode(),
                "contentType": "application/json",
                "accept": "application/json",
            },
        )


def _decode_base64_floats(encoded: str) -> list[float]:
    raw = base64.b64decode(encoded)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def test_titan_embeddings_call_invoke_model_once_per_input(catalog, stubbed, lambda_context):
    evt = event("embeddings")
    texts = json.loads(evt["body"])["input"]
    _titan_calls(stubbed("bedrock-runtime"), texts, TITAN_VECTORS, [5, 7])

    response = call(evt, lambda_context)

    assert response["statusCode"] == 200
    result = body_of(response)
    assert result["object"] == "list"
    assert result["model"] == "titan-embed"
    assert result["data"] == [
        {"object": "embedding", "index": 0, "embedding": TITAN_VECTORS[0]},
        {"object": "embedding", "index": 1, "embedding": TITAN_VECTORS[1]},
    ]
    # Token counts come from Bedrock's x-amzn-bedrock-input-token-count header, summed over the calls.
    assert result["usage"] == {"prompt_tokens": 12, "total_tokens": 12}
    assert result["sluice"]["provider"] == "bedrock"
    assert result["sluice"]["target"] == {"model_id": "amazon.titan-embed-text-v2:0"}
    assert result["sluice"]["estimated_cost_usd"] == pytest.approx(12 / 1000 * 0.00002)


def test_titan_embeddings_in_base64_are_little_endian_float32(catalog, stubbed, lambda_context):
    evt = event("embeddings", body={**json.loads(event("embeddings")["body"]), "encoding_format": "base64"})
    texts = json.loads(evt["body"])["input"]
    _titan_calls(stubbed("bedrock-runtime"), texts, TITAN_VECTORS, [5, 7])

    result = body_of(call(evt, lambda_context))

    encoded = [item["embedding"] for item in result["data"]]
    assert all(isinstance(item, str) for item in encoded)
    assert [_decode_base64_floats(item) for item in encoded] == TITAN_VECTORS  # exact in float32


def test_titan_embeddings_pass_dimensions_and_accept_a_single_string(catalog, stubbed, lambda_context):
    evt = event("embeddings", body={"model": "titan-embed", "input": "just one", "dimensions": 256})
    _titan_calls(stubbed("bedrock-runtime"), ["just one"], [[0.5, 0.5]], [2], dimensions=256)

    result = body_of(call(evt, lambda_context))

    assert [item["embedding"] for item in result["data"]] == [[0.5, 0.5]]
    assert result["usage"] == {"prompt_tokens": 2, "total_tokens": 2}


def test_embeddings_usage_is_zero_when_bedrock_sends_no_token_header(catalog, stubbed, lambda_context):
    evt = event("embeddings", body={"model": "titan-embed", "input": "no header"})
    stubbed("bedrock-runtime").add_response("invoke_model", bedrock_invoke_answer({"embedding": [0.5]}))

    result = body_of(call(evt, lambda_context))

    assert result["usage"] == {"prompt_tokens": 0, "total_tokens": 0}


def test_cohere_embeddings_batch_all_inputs_in_one_call(catalog, stubbed, lambda_context):
    evt = event("embeddings-cohere")
    texts = json.loads(evt["body"])["input"]
    stubbed("bedrock-runtime").add_response(
        "invoke_model",
        bedrock_invoke_answer(
            {"id": "e1", "embeddings": COHERE_VECTORS, "texts": texts, "response_type": "embeddings_floats"},
            input_tokens=19,
        ),
        expected_params={
            "modelId": "cohere.embed-english-v3",
            "body": json.dumps({"texts": texts, "input_type": "search_document"}).encode(),
            "contentType": "application/json",
            "accept": "application/json",
        },
    )

    response = call(evt, lambda_context)

    assert response["statusCode"] == 200
    result = body_of(response)
    assert [item["index"] for item in result["data"]] == [0, 1, 2]
    assert [item["embedding"] for item in result["data"]] == COHERE_VECTORS
    assert result["usage"] == {"prompt_tokens": 19, "total_tokens": 19}
    assert result["sluice"]["estimated_cost_usd"] == pytest.approx(19 / 1000 * 0.0001)


def test_cohere_embeddings_in_base64_decode_to_the_same_vectors(catalog, stubbed, lambda_context):
    request = {**json.loads(event("embeddings-cohere")["body"]), "encoding_format": "base64"}
    # With embedding_types, Cohere keys its answer by type.
    stubbed("bedrock-runtime").add_response(
        "invoke_model",
        bedrock_invoke_answer({"embeddings": {"float": COHERE_VECTORS}, "response_type": "embeddings_by_type"}, 19),
    )

    result = body_of(call(event("embeddings-cohere", body=request), lambda_context))

    assert [_decode_base64_floats(item["embedding"]) for item in result["data"]] == COHERE_VECTORS


def test_cohere_embeddings_split_more_than_96_inputs_into_batches(catalog, stubbed, lambda_context):
    texts = [f"document {i}" for i in range(100)]
    stub = stubbed("bedrock-runtime")
    for batch, tokens in ((texts[:96], 300), (texts[96:], 12)):
        stub.add_response(
            "invoke_model",
            bedrock_invoke_answer({"embeddings": [[float(texts.index(t))] for t in batch]}, input_tokens=tokens),
            expected_params={
                "modelId": "cohere.embed-english-v3",
                "body": json.dumps({"texts": batch, "input_type": "search_document"}).encode(),
                "contentType": "application/json",
                "accept": "application/json",
            },
        )

    result = body_of(call(event("embeddings-cohere", body={"model": "cohere-embed", "input": texts}), lambda_context))

    assert [item["embedding"] for item in result["data"]] == [[float(i)] for i in range(100)]
    assert [item["index"] for item in result["data"]] == list(range(100))
    assert result["usage"]["prompt_tokens"] == 312


def test_responses_carry_the_json_content_type(catalog, stubbed, lambda_context):
    stubbed("bedrock-runtime").add_response("converse", converse_answer("ok"))

    response = call(event("chat-completions"), lambda_context)

    assert header(response, "Content-Type") == "application/json"


def test_openapi_documents_every_error_status_a_client_can_get_with_the_error_schema(lambda_context):
    spec = body_of(call(event("docs"), lambda_context))
    invoke = spec["paths"]["/v1/models/{model}/invoke"]["post"]["responses"]

    for status in ("400", "401", "403", "404", "413", "415", "422", "429", "502", "503", "504"):
        assert invoke[status]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    health = spec["paths"]["/v1/health"]["get"]["responses"]
    assert "401" not in health  # public: no credential to refuse


def test_openapi_states_the_job_id_form_on_job_paths(lambda_context):
    from sluice.jobs.views import JOB_ID_PATTERN

    spec = body_of(call(event("docs"), lambda_context))
    [job_id] = [p for p in spec["paths"]["/v1/jobs/{job_id}"]["get"]["parameters"] if p["name"] == "job_id"]

    assert job_id["schema"]["pattern"] == JOB_ID_PATTERN

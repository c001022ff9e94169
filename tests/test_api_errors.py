"""Every way a request can fail, and the HTTP status, code and OpenAI-shaped body each failure maps to.

Each error body is checked for OpenAI's shape ({"error": {"message", "type", "param", "code"}}) and the
request id, so the OpenAI SDK raises the right exception class and a caller can quote the id.
"""

from __future__ import annotations

import json

import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

from tests.api_support import (
    assert_error,
    bedrock_invoke_answer,
    call,
    converse_answer,
    event,
    header,
    sagemaker_answer,
    set_header,
    store_catalog,
)

# --- request validation (422) -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["chat-completions", "embeddings", "invoke-bedrock-converse"])
def test_malformed_json_is_422_naming_the_body(catalog, lambda_context, name):
    evt = event(name, body='{"model": "claude-chat", "messages": [')

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed", "invalid_request_error")

    assert error["param"] == "body"
    assert error["details"] == [{"field": "body", "message": "not valid JSON; send a JSON object"}]
    assert "not valid JSON" in error["message"]


def test_chat_body_with_wrong_types_is_422_naming_each_field(catalog, lambda_context):
    evt = event("chat-completions", body={"model": 42, "messages": "hello", "temperature": "warm", "max_tokens": -5})

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    fields = [item["field"] for item in error["details"]]
    assert fields == ["body.model", "body.messages", "body.max_tokens", "body.temperature"]
    assert error["param"] == "body.model"
    for field in fields:
        assert field in error["message"]


def test_chat_body_missing_required_fields_is_422_naming_each_field(catalog, lambda_context):
    evt = event("chat-completions", body={"temperature": 0.5})

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["details"] == [
        {"field": "body.model", "message": "Field required"},
        {"field": "body.messages", "message": "Field required"},
    ]


def test_chat_message_with_an_unknown_role_names_the_nested_field(catalog, lambda_context):
    evt = event("chat-completions", body={"model": "claude-chat", "messages": [{"role": "robot", "content": "hi"}]})

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert [item["field"] for item in error["details"]] == ["body.messages.0.role"]


def test_json_that_is_not_an_object_is_422(catalog, lambda_context):
    evt = event("embeddings", body="[1, 2, 3]")

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == "body"


def test_embeddings_body_with_wrong_types_is_422_naming_each_field(catalog, lambda_context):
    evt = event("embeddings", body={"model": "titan-embed", "input": 12, "encoding_format": "hex"})

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    fields = {item["field"] for item in error["details"]}
    assert "body.encoding_format" in fields
    assert any(field.startswith("body.input") for field in fields)


def test_embeddings_with_an_empty_string_input_is_422(catalog, lambda_context):
    evt = event("embeddings", body={"model": "titan-embed", "input": ["ok", ""]})

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert any(item["field"].startswith("body.input") for item in error["details"])


def test_converse_invoke_body_missing_messages_and_with_a_typo_is_422_naming_both(catalog, lambda_context):
    evt = event("invoke-bedrock-converse", body={"inferenceConfg": {"maxTokens": 10}})

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert {item["field"] for item in error["details"]} == {"body.messages", "body.inferenceConfg"}


# --- models and callers (401, 403, 404) -------------------------------------------------------------


@pytest.mark.parametrize("name", ["models-list", "model-get", "invoke-sagemaker", "chat-completions", "embeddings"])
def test_request_without_caller_identity_is_401(catalog, lambda_context, name):
    evt = event(name)
    del evt["requestContext"]["authorizer"]

    error = assert_error(call(evt, lambda_context), evt, 401, "unauthenticated", "authentication_error")

    assert "Bearer" in error["message"]
    assert "SigV4" in error["message"]


def test_unknown_model_on_invoke_is_404(catalog, lambda_context):
    evt = event("invoke-sagemaker")
    evt["path"] = "/v1/models/iris-v9/invoke"
    evt["pathParameters"] = {"model": "iris-v9"}

    error = assert_error(call(evt, lambda_context), evt, 404, "model_not_found", "not_found_error")

    assert "iris-v9" in error["message"]
    assert "GET /v1/models" in error["message"]


@pytest.mark.parametrize("name", ["chat-completions", "embeddings"])
def test_unknown_model_in_an_openai_body_is_404_with_param_model(catalog, lambda_context, name):
    evt = event(name, body={**json.loads(event(name)["body"]), "model": "gpt-4o"})

    error = assert_error(call(evt, lambda_context), evt, 404, "model_not_found")

    assert error["param"] == "model"
    assert "gpt-4o" in error["message"]


def test_unknown_model_on_model_get_is_404(catalog, lambda_context):
    evt = event("model-get")
    evt["path"] = "/v1/models/nope"
    evt["pathParameters"] = {"model": "nope"}

    assert_error(call(evt, lambda_context), evt, 404, "model_not_found")


def test_model_not_allowed_for_the_caller_is_403_on_get_and_invoke(catalog, lambda_context):
    get = event("model-get")
    get["path"] = "/v1/models/private-model"
    get["pathParameters"] = {"model": "private-model"}
    invoke = event("invoke-sagemaker")
    invoke["path"] = "/v1/models/private-model/invoke"
    invoke["pathParameters"] = {"model": "private-model"}

    for evt in (get, invoke):
        error = assert_error(call(evt, lambda_context), evt, 403, "model_not_allowed", "permission_error")
        assert "private-model" in error["message"]
        assert "acme" in error["message"]


def test_iam_caller_outside_the_allowed_arns_is_403(catalog, lambda_context):
    evt = event("invoke-iam-caller")
    evt["requestContext"]["identity"]["userArn"] = "arn:aws:iam::123456789012:role/analytics"

    error = assert_error(call(evt, lambda_context), evt, 403, "model_not_allowed")

    assert "role/analytics" in error["message"]


# --- limits (400, 413) ------------------------------------------------------------------------------


def test_payload_over_the_model_limit_is_413_with_the_limit_and_a_pointer_to_async(catalog, lambda_context):
    rows = [[5.1, 3.5, 1.4, 0.2]] * 60
    evt = event("invoke-sagemaker", body={"instances": rows})
    size = len(evt["body"].encode())
    assert size > 1024

    error = assert_error(call(evt, lambda_context), evt, 413, "payload_too_large", "invalid_request_error")

    assert error["details"] == {"size_bytes": size, "limit_bytes": 1024}
    assert "1024 bytes" in error["message"]
    assert str(size) in error["message"]
    assert "POST /v1/models/iris/async" in error["message"]


def test_input_over_the_token_cap_is_400_with_the_numbers(catalog, lambda_context):
    # 4 chars per token: 4004 characters are about 1001 tokens, one over claude-chat's 1000.
    evt = event(
        "chat-completions", body={"model": "claude-chat", "messages": [{"role": "user", "content": "x" * 4004}]}
    )

    error = assert_error(call(evt, lambda_context), evt, 400, "token_limit_exceeded", "invalid_request_error")

    assert error["details"] == {"estimated_input_tokens": 1001, "max_input_tokens": 1000}
    assert "1001" in error["message"]
    assert "1000" in error["message"]
    assert error["param"] == "messages"


def test_input_exactly_at_the_token_cap_is_served(catalog, stubbed, lambda_context):
    stubbed("bedrock-runtime").add_response("converse", converse_answer("ok"))
    evt = event(
        "chat-completions", body={"model": "claude-chat", "messages": [{"role": "user", "content": "x" * 4000}]}
    )

    assert call(evt, lambda_context)["statusCode"] == 200


def test_converse_invoke_input_over_the_token_cap_counts_system_text_too(catalog, lambda_context):
    body = {"system": [{"text": "s" * 2000}], "messages": [{"role": "user", "content": [{"text": "u" * 2004}]}]}
    evt = event("invoke-bedrock-converse", body=body)

    error = assert_error(call(evt, lambda_context), evt, 400, "token_limit_exceeded")

    assert error["details"] == {"estimated_input_tokens": 1001, "max_input_tokens": 1000}


@pytest.mark.parametrize(
    ("name", "field", "requested", "cap"),
    [
        ("chat-completions", "max_tokens", 4096, 512),
        ("chat-completions", "max_completion_tokens", 513, 512),
        ("chat-completions-sagemaker", "max_tokens", 1000, 256),
    ],
)
def test_output_tokens_above_the_cap_are_400_with_the_numbers(catalog, lambda_context, name, field, requested, cap):
    request = json.loads(event(name)["body"])
    request.pop("max_tokens", None)
    evt = event(name, body={**request, field: requested})

    error = assert_error(call(evt, lambda_context), evt, 400, "token_limit_exceeded")

    assert error["param"] == field
    assert error["details"] == {"requested_output_tokens": requested, "max_output_tokens": cap}
    assert f"{field}={requested}" in error["message"]
    assert f"at most {cap}" in error["message"]


def test_converse_invoke_output_tokens_above_the_cap_name_the_converse_field(catalog, lambda_context):
    body = json.loads(event("invoke-bedrock-converse")["body"])
    body["inferenceConfig"]["maxTokens"] = 2048
    evt = event("invoke-bedrock-converse", body=body)

    error = assert_error(call(evt, lambda_context), evt, 400, "token_limit_exceeded")

    assert error["param"] == "inferenceConfig.maxTokens"
    assert error["details"] == {"requested_output_tokens": 2048, "max_output_tokens": 512}


def test_chat_payload_over_the_model_limit_is_413(catalog, lambda_context):
    catalog["models"]["llama-sm"]["limits"]["max_payload_bytes"] = 100
    store_catalog(catalog)
    evt = event(
        "chat-completions-sagemaker", body={"model": "llama-sm", "messages": [{"role": "user", "content": "é" * 60}]}
    )

    error = assert_error(call(evt, lambda_context), evt, 413, "payload_too_large")

    assert error["details"] == {"size_bytes": 120, "limit_bytes": 100}  # UTF-8 bytes, not characters


def test_embedding_input_over_the_token_cap_is_400_naming_input(catalog, lambda_context):
    catalog["models"]["titan-embed"]["limits"] = {"max_input_tokens": 8}
    store_catalog(catalog)
    evt = event("embeddings", body={"model": "titan-embed", "input": ["short", "y" * 33]})

    error = assert_error(call(evt, lambda_context), evt, 400, "token_limit_exceeded")

    assert error["param"] == "input"
    assert error["details"] == {"estimated_input_tokens": 9, "max_input_tokens": 8}


def test_native_invoke_of_a_capped_sagemaker_model_checks_the_body(catalog, lambda_context):
    catalog["models"]["llama-sm"]["limits"]["max_input_tokens"] = 10
    store_catalog(catalog)
    evt = event("invoke-sagemaker", body={"inputs": "z" * 60})
    evt["path"] = "/v1/models/llama-sm/invoke"
    evt["pathParameters"] = {"model": "llama-sm"}

    error = assert_error(call(evt, lambda_context), evt, 400, "token_limit_exceeded")

    assert error["param"] == "body"
    assert error["details"]["max_input_tokens"] == 10


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"inputs": "hi", "parameters": {"max_new_tokens": 1000}}, "parameters.max_new_tokens"),
        ({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 257}, "max_tokens"),
    ],
)
def test_native_invoke_of_a_capped_sagemaker_model_checks_where_families_ask_for_tokens(
    catalog, lambda_context, body, param
):
    evt = event("invoke-sagemaker", body=body)
    evt["path"] = "/v1/models/llama-sm/invoke"
    evt["pathParameters"] = {"model": "llama-sm"}

    error = assert_error(call(evt, lambda_context), evt, 400, "token_limit_exceeded")

    assert error["param"] == param
    assert error["details"]["max_output_tokens"] == 256


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("invoke-sagemaker", "application/xml"), ("invoke-bedrock-converse", "text/csv")],
)
def test_unsupported_content_type_is_415_listing_what_is_accepted(catalog, lambda_context, name, content_type):
    evt = event(name, headers={"Content-Type": content_type})

    error = assert_error(call(evt, lambda_context), evt, 415, "unsupported_media_type", "invalid_request_error")

    assert content_type in error["message"]
    assert "application/json" in error["message"]
    assert error["param"] == "Content-Type"


def test_content_type_parameters_do_not_make_a_type_unsupported(catalog, stubbed, lambda_context):
    evt = event("invoke-sagemaker", headers={"Content-Type": "Application/JSON; charset=utf-8"})
    stubbed("sagemaker-runtime").add_response("invoke_endpoint", sagemaker_answer({"predictions": [[1, 0, 0]]}))

    assert call(evt, lambda_context)["statusCode"] == 200


def test_stream_true_is_400_naming_stream(catalog, lambda_context):
    evt = event("chat-completions", body={**json.loads(event("chat-completions")["body"]), "stream": True})

    error = assert_error(call(evt, lambda_context), evt, 400, "invalid_request", "invalid_request_error")

    assert error["param"] == "stream"
    assert "stream" in error["message"]


@pytest.mark.parametrize(
    ("name", "model", "route"),
    [("chat-completions", "iris", "/v1/chat/completions"), ("embeddings", "claude-chat", "/v1/embeddings")],
)
def test_model_of_the_wrong_task_is_400_pointing_to_the_right_route(catalog, lambda_context, name, model, route):
    evt = event(name, body={**json.loads(event(name)["body"]), "model": model})

    error = assert_error(call(evt, lambda_context), evt, 400, "invalid_request")

    assert error["param"] == "model"
    assert route in error["message"]
    assert f"/v1/models/{model}/invoke" in error["message"]


def test_target_variant_header_on_a_bedrock_model_is_400(catalog, lambda_context):
    evt = event("invoke-bedrock-converse", headers={"X-Sluice-Target-Variant": "blue"})

    error = assert_error(call(evt, lambda_context), evt, 400, "invalid_request")

    assert error["param"] == "X-Sluice-Target-Variant"


def test_dimensions_on_a_model_without_them_is_400(catalog, lambda_context):
    evt = event("embeddings-cohere", body={"model": "cohere-embed", "input": "hi", "dimensions": 256})

    error = assert_error(call(evt, lambda_context), evt, 400, "invalid_request")

    assert error["param"] == "dimensions"


def test_chat_with_only_system_messages_is_400(catalog, lambda_context):
    evt = event("chat-completions", body={"model": "claude-chat", "messages": [{"role": "system", "content": "Hi"}]})

    error = assert_error(call(evt, lambda_context), evt, 400, "invalid_request")

    assert error["param"] == "messages"


# --- backend failures -------------------------------------------------------------------------------


def test_bedrock_throttling_is_429_with_retry_after(catalog, stubbed, lambda_context):
    stubbed("bedrock-runtime").add_client_error(
        "converse", "ThrottlingException", "Too many requests, please wait before trying again.", 429
    )
    evt = event("chat-completions")

    response = call(evt, lambda_context)

    error = assert_error(response, evt, 429, "throttled", "rate_limit_error")
    assert header(response, "Retry-After") == "2"
    assert "Retry after 2 s" in error["message"]


def test_sagemaker_throttling_is_429_with_retry_after(catalog, stubbed, lambda_context):
    stubbed("sagemaker-runtime").add_client_error("invoke_endpoint", "ThrottlingException", "Rate exceeded", 400)
    evt = event("invoke-sagemaker")

    response = call(evt, lambda_context)

    assert_error(response, evt, 429, "throttled", "rate_limit_error")
    assert header(response, "Retry-After") == "2"


def _sagemaker_model_error(
    stubbed,
    original_status,
    message,
    log_stream="arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/sluice-iris",
):
    stubbed("sagemaker-runtime").add_client_error(
        "invoke_endpoint",
        "ModelError",
        f"Received client error ({original_status}) from primary with message ...",
        424,
        modeled_fields={"OriginalStatusCode": original_status, "OriginalMessage": message, "LogStreamArn": log_stream},
    )


def test_model_4xx_is_400_model_rejected_input(catalog, stubbed, lambda_context):
    _sagemaker_model_error(stubbed, 400, '{"error": "expected 4 features, got 3"}')
    evt = event("invoke-sagemaker")

    error = assert_error(call(evt, lambda_context), evt, 400, "model_rejected_input", "invalid_request_error")

    assert "expected 4 features, got 3" in error["message"]
    assert error["details"] == {"original_status_code": 400}


def test_sagemaker_model_5xx_is_502_model_error_carrying_the_containers_message(catalog, stubbed, lambda_context):
    _sagemaker_model_error(stubbed, 500, "the container crashed")
    evt = event("invoke-sagemaker")

    error = assert_error(call(evt, lambda_context), evt, 502, "model_error", "server_error")

    assert "the container crashed" in error["message"]
    assert error["details"] == {"original_status_code": 500}


def test_model_error_does_not_leak_log_stream_arn(catalog, stubbed, lambda_context, caplog):
    log_stream = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/sagemaker/Endpoints/secret-endpoint"
    _sagemaker_model_error(stubbed, 500, "boom", log_stream=log_stream)
    evt = event("invoke-sagemaker")

    response = call(evt, lambda_context)

    assert response["statusCode"] == 502
    assert "log-group" not in response["body"]
    assert "secret-endpoint" not in response["body"]
    # Operators still find it: the function's log names it.
    assert any(getattr(record, "log_stream", None) == log_stream for record in caplog.records)


def test_bedrock_model_error_is_502_with_the_original_status(catalog, stubbed, lambda_context):
    stubbed("bedrock-runtime").add_client_error(
        "converse",
        "ModelErrorException",
        "The model returned an unexpected error.",
        424,
        modeled_fields={"originalStatusCode": 500, "resourceName": "claude"},
    )
    evt = event("chat-completions")

    error = assert_error(call(evt, lambda_context), evt, 502, "model_error")

    assert "unexpected error" in error["message"]
    assert error["details"]["original_status_code"] == 500


def test_bedrock_model_4xx_is_400_model_rejected_input(catalog, stubbed, lambda_context):
    stubbed("bedrock-runtime").add_client_error(
        "converse",
        "ModelErrorException",
        "The model could not process the prompt.",
        424,
        modeled_fields={"originalStatusCode": 422, "resourceName": "claude"},
    )
    evt = event("chat-completions")

    error = assert_error(call(evt, lambda_context), evt, 400, "model_rejected_input")

    assert "could not process the prompt" in error["message"]


@pytest.mark.parametrize(
    ("service", "name", "code"),
    [
        ("sagemaker-runtime", "invoke-sagemaker", "ModelNotReadyException"),
        ("sagemaker-runtime", "invoke-sagemaker", "ServiceUnavailable"),
        ("sagemaker-runtime", "invoke-sagemaker", "InternalFailure"),
        ("bedrock-runtime", "chat-completions", "ModelNotReadyException"),
        ("bedrock-runtime", "chat-completions", "ServiceUnavailableException"),
        ("bedrock-runtime", "chat-completions", "InternalServerException"),
    ],
)
def test_backend_not_ready_or_unavailable_is_503(catalog, stubbed, lambda_context, service, name, code):
    method = "invoke_endpoint" if service == "sagemaker-runtime" else "converse"
    stubbed(service).add_client_error(method, code, "Try again later.", 503)
    evt = event(name)

    error = assert_error(call(evt, lambda_context), evt, 503, "backend_unavailable", "server_error")

    assert code in error["message"]
    assert "Retry" in error["message"]


def test_unrecognised_backend_error_code_is_503(catalog, stubbed, lambda_context):
    stubbed("bedrock-runtime").add_client_error("converse", "SomethingNewException", "?", 500)
    evt = event("chat-completions")

    error = assert_error(call(evt, lambda_context), evt, 503, "backend_unavailable")

    assert "SomethingNewException" in error["message"]


def test_bedrock_model_timeout_is_504(catalog, stubbed, lambda_context):
    stubbed("bedrock-runtime").add_client_error(
        "converse", "ModelTimeoutException", "Model has timed out in processing the request.", 408
    )
    evt = event("chat-completions")

    error = assert_error(call(evt, lambda_context), evt, 504, "backend_timeout", "server_error")

    assert "timed out" in error["message"]


def _raise_from(client, method: str, exc: Exception, monkeypatch) -> list[dict]:
    """Make `client.<method>` raise `exc` (what botocore's HTTP layer does); returns the calls it received."""
    calls: list[dict] = []

    def fail(**params):
        calls.append(params)
        raise exc

    monkeypatch.setattr(client, method, fail)
    return calls


def test_read_timeout_talking_to_the_backend_is_504(catalog, stubbed, lambda_context, monkeypatch):
    url = "https://runtime.sagemaker.us-east-1.amazonaws.com/endpoints/sluice-iris/invocations"
    calls = _raise_from(
        stubbed("sagemaker-runtime").client, "invoke_endpoint", ReadTimeoutError(endpoint_url=url), monkeypatch
    )
    evt = event("invoke-sagemaker")

    error = assert_error(call(evt, lambda_context), evt, 504, "backend_timeout")

    assert [c["EndpointName"] for c in calls] == ["sluice-iris"]
    assert "async inference" in error["message"]
    assert url not in error["message"]


def test_backend_that_cannot_be_reached_is_503(catalog, stubbed, lambda_context, monkeypatch):
    url = "https://bedrock-runtime.us-east-1.amazonaws.com/model/x/converse"
    _raise_from(stubbed("bedrock-runtime").client, "converse", EndpointConnectionError(endpoint_url=url), monkeypatch)
    evt = event("chat-completions")

    assert_error(call(evt, lambda_context), evt, 503, "backend_unavailable")


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("AccessDeniedException", "User: arn:aws:sts::123456789012:assumed-role/sluice-api is not authorized"),
        ("ResourceNotFoundException", "Model not found."),
    ],
)
def test_bedrock_access_denied_or_missing_model_is_502_backend_misconfigured(
    catalog, stubbed, lambda_context, code, message
):
    stubbed("bedrock-runtime").add_client_error("converse", code, message, 403)
    evt = event("chat-completions")

    error = assert_error(call(evt, lambda_context), evt, 502, "backend_misconfigured", "server_error")

    assert "platform configuration problem" in error["message"]
    assert "assumed-role" not in error["message"]  # IAM details stay in the logs


def test_sagemaker_missing_endpoint_is_502_backend_misconfigured(catalog, stubbed, lambda_context):
    stubbed("sagemaker-runtime").add_client_error(
        "invoke_endpoint", "ValidationError", "Endpoint sluice-iris of account 123456789012 not found.", 400
    )
    evt = event("invoke-sagemaker")

    error = assert_error(call(evt, lambda_context), evt, 502, "backend_misconfigured")

    assert "123456789012" not in error["message"]


@pytest.mark.parametrize(
    ("service", "name", "code", "message"),
    [
        (
            "bedrock-runtime",
            "chat-completions",
            "ValidationException",
            "A conversation must start with a user message.",
        ),
        ("sagemaker-runtime", "invoke-sagemaker", "ValidationError", "Inference Component Name header is required."),
    ],
)
def test_other_backend_validation_errors_are_400_with_the_backend_message(
    catalog, stubbed, lambda_context, service, name, code, message
):
    method = "invoke_endpoint" if service == "sagemaker-runtime" else "converse"
    stubbed(service).add_client_error(method, code, message, 400)
    evt = event(name)

    error = assert_error(call(evt, lambda_context), evt, 400, "invalid_request", "invalid_request_error")

    assert message in error["message"]


def test_chat_container_answer_not_in_openai_format_is_502(catalog, stubbed, lambda_context):
    stubbed("sagemaker-runtime").add_response("invoke_endpoint", sagemaker_answer({"generated_text": "hi"}))
    evt = event("chat-completions-sagemaker")

    error = assert_error(call(evt, lambda_context), evt, 502, "model_error")

    assert "chat_format" in error["message"]


def test_embedding_answer_in_the_wrong_format_is_502(catalog, stubbed, lambda_context):
    stubbed("bedrock-runtime").add_response("invoke_model", bedrock_invoke_answer({"vectors": [[0.1]]}))
    evt = event("embeddings", body={"model": "titan-embed", "input": "one"})

    error = assert_error(call(evt, lambda_context), evt, 502, "model_error")

    assert "titan-v2" in error["message"]


def test_fewer_embeddings_than_inputs_is_502(catalog, stubbed, lambda_context):
    stubbed("bedrock-runtime").add_response("invoke_model", bedrock_invoke_answer({"embeddings": [[0.1]]}))
    evt = event("embeddings-cohere")

    error = assert_error(call(evt, lambda_context), evt, 502, "model_error")

    assert "1 embeddings for 3 inputs" in error["message"]


# --- routing and the unexpected ---------------------------------------------------------------------


def test_unknown_route_is_404_naming_method_and_path(lambda_context):
    evt = event("unknown-route")

    error = assert_error(call(evt, lambda_context), evt, 404, "route_not_found", "not_found_error")

    assert error["message"] == "No route GET /v1/completions."


def test_wrong_method_on_a_known_path_is_404(lambda_context):
    evt = event("health")
    evt["httpMethod"] = evt["requestContext"]["httpMethod"] = "DELETE"

    error = assert_error(call(evt, lambda_context), evt, 404, "route_not_found")

    assert "DELETE /v1/health" in error["message"]


def test_unexpected_exception_is_500_json_without_a_stack_trace(catalog, stubbed, lambda_context):
    # A Body of bytes where botocore always returns a stream makes the provider code fail unplanned.
    stubbed("sagemaker-runtime").add_response("invoke_endpoint", {"Body": b"{}", "ContentType": "application/json"})
    evt = event("invoke-sagemaker")

    response = call(evt, lambda_context)

    error = assert_error(response, evt, 500, "internal_error", "server_error")
    assert error["message"] == "Internal error. Quote the request_id when reporting it."
    assert error["param"] is None
    for leak in ("Traceback", "AttributeError", "File ", ".py", "read"):
        assert leak not in response["body"]


def test_error_responses_keep_the_json_content_type_when_the_request_sent_another(catalog, lambda_context):
    evt = event("invoke-sagemaker-csv")
    set_header(evt, "Content-Type", "image/png")

    response = call(evt, lambda_context)

    assert response["statusCode"] == 415
    assert header(response, "Content-Type") == "application/json"


@pytest.mark.parametrize("name", ["invoke-sagemaker", "invoke-bedrock-converse"])
def test_malformed_json_body_is_422_not_502(catalog, stubbed, lambda_context, name):
    stubbed("sagemaker-runtime")  # no answer queued: any backend call fails the test
    stubbed("bedrock-runtime")
    evt = event(name, body="{not json")

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == "body"
    assert "not valid JSON" in error["message"]


def test_malformed_json_async_submit_is_422_before_any_job_exists(catalog, stubbed, lambda_context):
    evt = event("async-submit", body="{not json")

    error = assert_error(call(evt, lambda_context), evt, 422, "validation_failed")

    assert error["param"] == "body"

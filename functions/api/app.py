"""The Sluice REST API: native invoke, OpenAI-compatible chat, embeddings and models, health, docs."""

from __future__ import annotations

import base64
from typing import Annotated

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.params import Path
from aws_lambda_powertools.logging import correlation_paths

from sluice import __version__
from sluice.api_errors import error_response_parts
from sluice.auth.caller import caller_from_request_context
from sluice.errors import RouteNotFound, SluiceError
from sluice.inference.chat import create_chat_completion
from sluice.inference.context import RequestContext
from sluice.inference.embeddings import create_embeddings
from sluice.inference.invoke import InvokeResponse, invoke
from sluice.inference.listing import describe_model, list_models
from sluice.inference.validation import field_errors, validation_failed
from sluice.openai_compat.chat import ChatCompletion, ChatCompletionRequest
from sluice.openai_compat.embeddings import EmbeddingList, EmbeddingRequest
from sluice.openai_compat.models import ModelCard, ModelList
from sluice.settings import get_settings
from sluice.telemetry import logger, metrics, record_error, tracer

app = APIGatewayRestResolver(enable_validation=True)
app.enable_swagger(path="/v1/docs", title="Sluice", version=__version__, description="ML inference plane")

ModelParam = Annotated[str, Path(description="Logical model name from the catalog")]


def request_context() -> RequestContext:
    raw = app.current_event.raw_event.get("requestContext") or {}
    ctx = RequestContext(request_id=raw.get("requestId", ""), caller=caller_from_request_context(raw))
    logger.append_keys(caller=ctx.caller.identity, auth=ctx.caller.auth)
    app.append_context(sluice=ctx)
    return ctx


@app.get("/v1/health")
def health() -> dict:
    return {"status": "ok", "version": __version__}


@app.get("/v1/models")
def get_models() -> ModelList:
    return list_models(request_context())


@app.get("/v1/models/<model>")
def get_model(model: ModelParam) -> ModelCard:
    return describe_model(request_context(), model)


@app.post("/v1/models/<model>/invoke")
def post_invoke(model: ModelParam) -> InvokeResponse:
    event = app.current_event
    body = event.body or ""
    raw = base64.b64decode(body) if event.is_base64_encoded else body.encode()
    return invoke(
        request_context(),
        model,
        raw,
        event.headers.get("content-type") or event.headers.get("Content-Type"),
        event.headers.get("x-sluice-target-variant") or event.headers.get("X-Sluice-Target-Variant"),
    )


@app.post("/v1/chat/completions")
def post_chat_completions(request: ChatCompletionRequest) -> ChatCompletion:
    return create_chat_completion(request_context(), request)


@app.post("/v1/embeddings")
def post_embeddings(request: EmbeddingRequest) -> EmbeddingList:
    return create_embeddings(request_context(), request)


def _error(error: SluiceError) -> Response:
    ctx: RequestContext | None = app.context.get("sluice")
    request_id = app.current_event.request_context.request_id
    record_error(code=error.code, status=error.status, model=ctx and ctx.model, provider=ctx and ctx.provider)
    log = logger.warning if error.status < 500 else logger.error
    log("request failed", extra={"status": error.status, "error_code": error.code, "reason": error.message})
    status, headers, body = error_response_parts(error, request_id)
    return Response(status_code=status, content_type="application/json", body=body, headers=headers)


@app.exception_handler(SluiceError)
def on_sluice_error(error: SluiceError) -> Response:
    return _error(error)


@app.exception_handler(RequestValidationError)
def on_validation_error(error: RequestValidationError) -> Response:
    return _error(validation_failed(field_errors(list(error.errors()))))


@app.exception_handler(Exception)
def on_unexpected(_: Exception) -> Response:
    # Never a stack trace on the wire: the log has it, the caller gets the request id to quote.
    logger.exception("unhandled error")
    return _error(SluiceError("Internal error. Quote the request_id when reporting it."))


@app.not_found
def on_not_found(_: Exception) -> Response:
    return _error(RouteNotFound(f"No route {app.current_event.http_method} {app.current_event.path}."))


@logger.inject_lambda_context(correlation_id_path=correlation_paths.API_GATEWAY_REST)
@tracer.capture_lambda_handler
@metrics.log_metrics
def lambda_handler(event: dict, context: object) -> dict:
    # Bodies hold customer data: logged only when the stack's LogBodies debug flag is on.
    log_bodies = get_settings().log_bodies
    if log_bodies:
        logger.info("request body", extra={"body": event.get("body")})
    response = app.resolve(event, context)
    if log_bodies:
        logger.info("response body", extra={"body": response.get("body")})
    return response

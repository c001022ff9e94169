"""The Sluice REST API: native invoke, OpenAI-compatible chat, embeddings and models, jobs, the
operations routes (approvals, training, the model registry, deployments), health, docs.

Bodies are parsed by the domain's pydantic models (422 naming each field) rather than by the
resolver's OpenAPI validation, whose import alone costs ~100 ms of every cold start; the OpenAPI
document is built from ROUTES only when /v1/docs is asked for.
"""

from __future__ import annotations

import base64
from collections.abc import Callable

from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response
from aws_lambda_powertools.logging import correlation_paths
from pydantic import BaseModel

from sluice import __version__
from sluice.api_errors import error_response_parts
from sluice.approvals.models import ApprovalList, DecidedApproval, DecisionRequest
from sluice.auth.caller import caller_from_request_context
from sluice.errors import RouteNotFound, SluiceError
from sluice.inference.chat import create_chat_completion
from sluice.inference.embeddings import create_embeddings
from sluice.inference.invoke import InvokeResponse, invoke
from sluice.inference.listing import describe_model, list_models
from sluice.jobs.idempotency import HEADER as IDEMPOTENCY_HEADER
from sluice.jobs.kinds.async_inference.models import UploadRequest, UploadTicket
from sluice.jobs.kinds.async_inference.submit import (
    CALLBACK_SNS_HEADER,
    CALLBACK_URL_HEADER,
    UPLOAD_HEADER,
    callback_from,
    create_upload,
    submit_async,
)
from sluice.jobs.kinds.batch_transform.models import BatchJobRequest
from sluice.jobs.kinds.batch_transform.submit import submit_batch
from sluice.jobs.kinds.deployment.models import DeploymentRequest
from sluice.jobs.kinds.deployment.rollback import RollbackRequest
from sluice.jobs.kinds.training.models import TrainingJobRequest
from sluice.jobs.models import Job
from sluice.jobs.queries import cancel_job, get_job, list_jobs
from sluice.jobs.views import JobList, JobListQuery, JobView
from sluice.openai_compat.chat import ChatCompletion, ChatCompletionRequest
from sluice.openai_compat.embeddings import EmbeddingList, EmbeddingRequest
from sluice.openai_compat.models import ModelCard, ModelList
from sluice.registry.models import RegistryVersion, RegistryVersionList, VersionDecisionRequest
from sluice.request.context import RequestContext
from sluice.request.validation import parse_json_body, parse_query
from sluice.settings import get_settings
from sluice.telemetry import logger, metrics, record_error, tracer

app = APIGatewayRestResolver()
JOB_HEADERS = (
    (UPLOAD_HEADER, "The upload id of a file PUT to an upload URL; send no body with it"),
    (IDEMPOTENCY_HEADER, "Retrying with the same key returns the same job"),
    (CALLBACK_SNS_HEADER, "SNS topic ARN told the final status (or ?callback_sns=)"),
    (CALLBACK_URL_HEADER, "https URL sent the final status, HMAC-signed (or ?callback_url=)"),
)
# (method, path, summary, request model, response model, raw body, public): the docs are built from it.
ROUTES: list[tuple] = []


def route(
    method: str,
    path: str,
    summary: str,
    *,
    request: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    raw_body: bool = False,
    public: bool = False,
    headers: tuple[tuple[str, str], ...] = (),
    status: int = 200,
) -> Callable:
    def register(handler: Callable) -> Callable:
        ROUTES.append((method, path, summary, request, response, raw_body, public, headers, status))
        return app.route(path, method)(handler)

    return register


def request_context() -> RequestContext:
    raw = app.current_event.raw_event.get("requestContext") or {}
    ctx = RequestContext(request_id=raw.get("requestId", ""), caller=caller_from_request_context(raw))
    logger.append_keys(caller=ctx.caller.identity, auth=ctx.caller.auth, role=ctx.caller.role.value)
    app.append_context(sluice=ctx)
    return ctx


def raw_body() -> bytes:
    event = app.current_event
    body = event.body or ""
    return base64.b64decode(body) if event.is_base64_encoded else body.encode()


def ok(model: BaseModel, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status_code=status,
        content_type="application/json",
        body=model.model_dump_json(),
        headers={"X-Request-Id": app.current_event.request_context.request_id or "", **(headers or {})},
    )


def accepted(job: Job, replayed: bool) -> Response:
    """202 with the job and where to poll it; a replayed Idempotency-Key says so."""
    headers = {"Location": f"/v1/jobs/{job.job_id}"}
    if replayed:
        headers["Idempotent-Replayed"] = "true"
    return ok(JobView.of(job), status=202, headers=headers)


@route("GET", "/v1/health", "Liveness; calls no backend", public=True)
def health() -> dict:
    return {"status": "ok", "version": __version__}


@route("GET", "/v1/models", "Models this caller may use, with how to call each", response=ModelList)
def get_models() -> Response:
    return ok(list_models(request_context()))


@route("GET", "/v1/models/<model>", "One model of the catalog", response=ModelCard)
def get_model(model: str) -> Response:
    return ok(describe_model(request_context(), model))


@route(
    "POST",
    "/v1/models/<model>/invoke",
    "Body to the model's backend",
    response=InvokeResponse,
    raw_body=True,
    headers=(("X-Sluice-Target-Variant", "Pin a SageMaker production variant for this request"),),
)
def post_invoke(model: str) -> Response:
    headers = app.current_event.headers
    ctx = request_context()
    return ok(invoke(ctx, model, raw_body(), headers.get("content-type"), headers.get("x-sluice-target-variant")))


@route("POST", "/v1/chat/completions", "OpenAI chat", request=ChatCompletionRequest, response=ChatCompletion)
def post_chat_completions() -> Response:
    ctx = request_context()
    return ok(create_chat_completion(ctx, parse_json_body(ChatCompletionRequest, raw_body())))


@route("POST", "/v1/embeddings", "OpenAI embeddings", request=EmbeddingRequest, response=EmbeddingList)
def post_embeddings() -> Response:
    ctx = request_context()
    return ok(create_embeddings(ctx, parse_json_body(EmbeddingRequest, raw_body())))


@route(
    "POST",
    "/v1/models/<model>/async",
    "Submit an async job: the body, or an upload named in X-Sluice-Input-Upload, is the input",
    response=JobView,
    raw_body=True,
    headers=JOB_HEADERS,
    status=202,
)
def post_async(model: str) -> Response:
    event = app.current_event
    headers = event.headers
    ctx = request_context()
    job, replayed = submit_async(
        ctx,
        model,
        body=raw_body(),
        content_type=headers.get("content-type"),
        upload_id=headers.get(UPLOAD_HEADER),
        callback=callback_from(headers, event.query_string_parameters or {}),
        idempotency_key=headers.get(IDEMPOTENCY_HEADER),
        lambda_context=app.lambda_context,
    )
    return accepted(job, replayed)


@route(
    "POST",
    "/v1/models/<model>/async/uploads",
    "A presigned URL to PUT a large async input to (step 1 of 2)",
    request=UploadRequest,
    response=UploadTicket,
    status=201,
)
def post_async_upload(model: str) -> Response:
    ctx = request_context()
    return ok(create_upload(ctx, model, parse_json_body(UploadRequest, raw_body())), status=201)


@route(
    "POST",
    "/v1/batch-jobs",
    "Start a batch transform job over an S3 prefix",
    request=BatchJobRequest,
    response=JobView,
    headers=((IDEMPOTENCY_HEADER, "Retrying with the same key returns the same job"),),
    status=202,
)
def post_batch_job() -> Response:
    ctx = request_context()
    request = parse_json_body(BatchJobRequest, raw_body())
    idempotency_key = app.current_event.headers.get(IDEMPOTENCY_HEADER)
    job, replayed = submit_batch(ctx, request, idempotency_key=idempotency_key, lambda_context=app.lambda_context)
    return accepted(job, replayed)


@route("GET", "/v1/jobs", "Your jobs, newest first (?limit, ?next_token, ?status, ?kind)", response=JobList)
def get_jobs() -> Response:
    ctx = request_context()
    return ok(list_jobs(ctx, parse_query(JobListQuery, app.current_event.query_string_parameters)))


@route("GET", "/v1/jobs/<job_id>", "One of your jobs; download URLs once it SUCCEEDED", response=JobView)
def get_one_job(job_id: str) -> Response:
    return ok(get_job(request_context(), job_id))


@route("POST", "/v1/jobs/<job_id>/cancel", "Cancel a QUEUED or RUNNING job", response=JobView)
def post_cancel_job(job_id: str) -> Response:
    return ok(cancel_job(request_context(), job_id))


@route("GET", "/v1/approvals", "Operators: pending approval requests, oldest first", response=ApprovalList)
def get_approvals() -> Response:
    from sluice.approvals.decisions import list_approvals

    return ok(list_approvals(request_context()))


@route(
    "POST",
    "/v1/approvals/<approval_id>/approve",
    "Operators: approve a request; its job goes on",
    request=DecisionRequest,
    response=DecidedApproval,
)
def post_approve(approval_id: str) -> Response:
    from sluice.approvals.decisions import decide_approval

    return ok(decide_approval(request_context(), approval_id, "approve", raw_body()))


@route(
    "POST",
    "/v1/approvals/<approval_id>/deny",
    "Operators: deny a request; its job fails with the reason",
    request=DecisionRequest,
    response=DecidedApproval,
)
def post_deny(approval_id: str) -> Response:
    from sluice.approvals.decisions import decide_approval

    return ok(decide_approval(request_context(), approval_id, "deny", raw_body()))


@route(
    "POST",
    "/v1/training-jobs",
    "Operators: start a training run (checkpointed spot attempts, then registration)",
    request=TrainingJobRequest,
    response=JobView,
    headers=((IDEMPOTENCY_HEADER, "Retrying with the same key returns the same job"),),
    status=202,
)
def post_training_job() -> Response:
    from sluice.auth.roles import require_operator
    from sluice.jobs.kinds.training.submit import ROUTE, submit_training

    ctx = request_context()
    # Before the body is read: a consumer learns nothing about what a valid training request is.
    require_operator(ctx, ROUTE)
    request = parse_json_body(TrainingJobRequest, raw_body())
    idempotency_key = app.current_event.headers.get(IDEMPOTENCY_HEADER)
    job, replayed = submit_training(ctx, request, idempotency_key=idempotency_key, lambda_context=app.lambda_context)
    return accepted(job, replayed)


@route(
    "POST",
    "/v1/deployments",
    "Operators: deploy a model version onto a SageMaker endpoint in guarded steps (canary, linear, blue_green, ab)",
    request=DeploymentRequest,
    response=JobView,
    headers=((IDEMPOTENCY_HEADER, "Retrying with the same key returns the same job"),),
    status=202,
)
def post_deployment() -> Response:
    from sluice.auth.roles import require_operator
    from sluice.jobs.kinds.deployment.submit import ROUTE, submit_deployment

    ctx = request_context()
    # Before the body is read: a consumer learns nothing about what a valid deployment request is.
    require_operator(ctx, ROUTE)
    request = parse_json_body(DeploymentRequest, raw_body())
    idempotency_key = app.current_event.headers.get(IDEMPOTENCY_HEADER)
    job, replayed = submit_deployment(ctx, request, idempotency_key=idempotency_key, lambda_context=app.lambda_context)
    return accepted(job, replayed)


@route(
    "POST",
    "/v1/deployments/<job_id>/rollback",
    "Operators: roll one of your deployments back now, with a reason (the workflow rolls back)",
    request=RollbackRequest,
    response=JobView,
    status=202,
)
def post_rollback_deployment(job_id: str) -> Response:
    from sluice.jobs.kinds.deployment.rollback import request_rollback

    return ok(request_rollback(request_context(), job_id, raw_body()), status=202)


@route(
    "GET",
    "/v1/registry/<group>",
    "Operators: a model package group's versions, newest first",
    response=RegistryVersionList,
)
def get_registry_versions(group: str) -> Response:
    from sluice.registry.versions import list_versions

    return ok(list_versions(request_context(), group))


@route(
    "POST",
    "/v1/registry/<group>/versions/<version>/approve",
    "Operators: approve a model version for deployment, with a reason",
    request=VersionDecisionRequest,
    response=RegistryVersion,
)
def post_approve_version(group: str, version: str) -> Response:
    from sluice.registry.versions import decide_version

    return ok(decide_version(request_context(), group, version, "approve", raw_body()))


@route(
    "POST",
    "/v1/registry/<group>/versions/<version>/reject",
    "Operators: reject a model version, with a reason",
    request=VersionDecisionRequest,
    response=RegistryVersion,
)
def post_reject_version(group: str, version: str) -> Response:
    from sluice.registry.versions import decide_version

    return ok(decide_version(request_context(), group, version, "reject", raw_body()))


@route("GET", "/v1/docs", "This API's OpenAPI document (?format=json) or its Swagger UI")
def get_docs() -> Response:
    from sluice.api_docs import swagger_page

    document = openapi()
    if app.current_event.query_string_parameters.get("format") == "json":
        return Response(status_code=200, content_type="application/json", body=document)
    return Response(status_code=200, content_type="text/html", body=swagger_page(document))


def openapi() -> dict:
    from sluice.api_docs import RouteDoc, openapi_document

    routes = [RouteDoc(*entry) for entry in ROUTES]
    return openapi_document(routes, title="Sluice", version=__version__, description="ML inference plane")


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

"""Backend failures translated into Sluice errors: a status the client can act on, details for operators."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    ClientError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from sluice.errors import (
    BackendMisconfigured,
    BackendTimeout,
    BackendUnavailable,
    InvalidRequest,
    ModelFailed,
    ModelRejectedInput,
    SluiceError,
    Throttled,
)
from sluice.settings import get_settings
from sluice.telemetry import logger

_THROTTLES = {"ThrottlingException", "TooManyRequestsException", "ServiceQuotaExceededException"}
_UNAVAILABLE = {
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ModelNotReadyException",
    "InternalFailure",
    "InternalServerException",
    "InternalDependencyException",
}
_MISCONFIGURED = {"AccessDeniedException", "ResourceNotFoundException", "UnrecognizedClientException"}


@contextmanager
def translate_errors(provider: str) -> Iterator[None]:
    try:
        yield
    except ClientError as exc:
        raise from_client_error(provider, exc) from exc
    except (ReadTimeoutError, ConnectTimeoutError) as exc:
        raise BackendTimeout(
            f"The {provider} backend did not answer in time. Retry, or use async inference for long requests."
        ) from exc
    except EndpointConnectionError as exc:
        raise BackendUnavailable(f"The {provider} backend could not be reached. Retry shortly.") from exc


def from_client_error(provider: str, exc: ClientError) -> SluiceError:
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    message = error.get("Message", str(exc))
    if code in _THROTTLES:
        retry_after = str(get_settings().throttle_retry_after_seconds)
        return Throttled(
            f"The {provider} backend is throttling requests ({code}). Retry after {retry_after} s.",
            headers={"Retry-After": retry_after},
        )
    if code in ("ModelError", "ModelErrorException"):
        # SageMaker's ModelError names it OriginalStatusCode, Bedrock's ModelErrorException originalStatusCode.
        original = exc.response.get("OriginalStatusCode", exc.response.get("originalStatusCode"))
        model_message = exc.response.get("OriginalMessage") or message
        # The log stream names the account and endpoint: operators get it in the logs, callers never see it.
        logger.warning(
            "model returned an error",
            extra={
                "provider": provider,
                "original_status_code": original,
                "log_stream": exc.response.get("LogStreamArn"),
            },
        )
        if _is_client_status(original):
            return ModelRejectedInput(
                f"The model rejected the input: {model_message}", details={"original_status_code": original}
            )
        return ModelFailed(f"The model returned an error: {model_message}", details={"original_status_code": original})
    if code == "ModelTimeoutException":
        return BackendTimeout(f"The model took too long to answer: {message}")
    if code in _UNAVAILABLE:
        return BackendUnavailable(f"The {provider} backend is not ready ({code}): {message}. Retry shortly.")
    if code in _MISCONFIGURED or _is_missing_endpoint(code, message):
        logger.error("backend misconfigured", extra={"provider": provider, "code": code, "backend_message": message})
        return BackendMisconfigured(
            f"The {provider} backend refused the call ({code}). This is a platform configuration problem "
            "(catalog entry or IAM permissions), not a problem with your request; the platform team has the details."
        )
    if code in ("ValidationException", "ValidationError"):
        return InvalidRequest(f"The {provider} backend rejected the request: {message}")
    logger.error("unexpected backend error", extra={"provider": provider, "code": code, "backend_message": message})
    return BackendUnavailable(f"The {provider} backend failed ({code}). Retry shortly.")


def _is_client_status(status: object) -> bool:
    # An unknown status stays a model failure: only an explicit 4xx puts the blame on the caller.
    try:
        return 400 <= int(status) < 500  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


def _is_missing_endpoint(code: str, message: str) -> bool:
    # SageMaker reports a missing endpoint as a ValidationError: "Endpoint x of account y not found."
    return code == "ValidationError" and message.startswith("Endpoint ") and "not found" in message

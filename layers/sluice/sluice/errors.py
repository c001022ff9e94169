"""The one error hierarchy. Each error knows its HTTP status, a stable code and what the caller should do.

The wire shape is OpenAI's (`{"error": {"message", "type", "param", "code"}}`) on every route, so the
OpenAI SDK raises the right exception class and native clients get the same fields.
"""

from __future__ import annotations

from typing import Any


class SluiceError(Exception):
    status: int = 500
    code: str = "internal_error"
    type: str = "server_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details = details
        self.headers = headers or {}

    def body(self, request_id: str | None = None) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        if self.details is not None:
            error["details"] = self.details
        if request_id:
            error["request_id"] = request_id
        return {"error": error}


# 4xx: the caller can fix these.
class InvalidRequest(SluiceError):
    status, code, type = 400, "invalid_request", "invalid_request_error"


class TokenLimitExceeded(InvalidRequest):
    code = "token_limit_exceeded"


class Unauthenticated(SluiceError):
    status, code, type = 401, "unauthenticated", "authentication_error"


class IdentityNotAccepted(SluiceError):
    """A SigV4 principal that cannot identify a caller: a name anyone may choose, or a kind Sluice does not know."""

    status, code, type = 403, "identity_not_accepted", "permission_error"


class ModelForbidden(SluiceError):
    status, code, type = 403, "model_not_allowed", "permission_error"


class ModelNotFound(SluiceError):
    status, code, type = 404, "model_not_found", "not_found_error"


class RouteNotFound(SluiceError):
    status, code, type = 404, "route_not_found", "not_found_error"


class JobNotFound(SluiceError):
    status, code, type = 404, "job_not_found", "not_found_error"


class UploadNotFound(SluiceError):
    status, code, type = 404, "upload_not_found", "not_found_error"


class OperatorRequired(SluiceError):
    """An operations route (approvals, and later training, deployments, budgets) called by a consumer."""

    status, code, type = 403, "operator_required", "permission_error"


class ApprovalNotFound(SluiceError):
    status, code, type = 404, "approval_not_found", "not_found_error"


class TrainerNotFound(SluiceError):
    """An unknown trainer, or one this caller may not use: the same answer, so neither leaks its existence."""

    status, code, type = 404, "trainer_not_found", "not_found_error"


class RegistryGroupNotFound(SluiceError):
    status, code, type = 404, "registry_group_not_found", "not_found_error"


class RegistryVersionNotFound(SluiceError):
    status, code, type = 404, "registry_version_not_found", "not_found_error"


class LocationNotAllowed(SluiceError):
    """An S3 location outside what this caller may read or write."""

    status, code, type = 403, "location_not_allowed", "permission_error"


class Conflict(SluiceError):
    """The request contradicts the resource's state (cancelling a finished job, a key still in use)."""

    status, code, type = 409, "conflict", "invalid_request_error"


class JobNotCancellable(Conflict):
    code = "job_not_cancellable"


class IdempotencyKeyInProgress(Conflict):
    code = "idempotency_key_in_progress"


class ApprovalClosed(Conflict):
    """The approval was already decided, expired or was withdrawn (its job cancelled)."""

    code = "approval_closed"


class VersionAlreadyDecided(Conflict):
    """Approving an Approved model package version, or rejecting a Rejected one."""

    code = "version_already_decided"


class DeploymentInProgress(Conflict):
    """Another deployment holds the endpoint (one deployment per endpoint at a time)."""

    code = "deployment_in_progress"


class EndpointNotInService(Conflict):
    """A deployment changes an endpoint only while SageMaker says it is InService."""

    code = "endpoint_not_in_service"


class ModelVersionNotApproved(Conflict):
    """A registry version that is not Approved cannot be deployed."""

    code = "model_version_not_approved"


class DeploymentFinished(Conflict):
    """Rolling back a deployment that already ended."""

    code = "deployment_finished"


class PayloadTooLarge(SluiceError):
    status, code, type = 413, "payload_too_large", "invalid_request_error"


class UnsupportedMediaType(SluiceError):
    status, code, type = 415, "unsupported_media_type", "invalid_request_error"


class ValidationFailed(SluiceError):
    status, code, type = 422, "validation_failed", "invalid_request_error"


class IdempotencyKeyReused(ValidationFailed):
    code = "idempotency_key_reused"


class ModelRejectedInput(SluiceError):
    """The model answered 4xx: the input is the caller's to fix, so retrying it unchanged cannot help."""

    status, code, type = 400, "model_rejected_input", "invalid_request_error"


class Throttled(SluiceError):
    status, code, type = 429, "throttled", "rate_limit_error"


class TooManyOpenUploads(SluiceError):
    """The caller holds as many unused, unexpired upload tickets as it may."""

    status, code, type = 429, "too_many_open_uploads", "rate_limit_error"


# 5xx: the backend or the platform is at fault.
class ModelFailed(SluiceError):
    """The model container ran and answered with an error of its own."""

    status, code, type = 502, "model_error", "server_error"


class BackendMisconfigured(SluiceError):
    """Access denied, missing endpoint or model: the platform team must fix the catalog or IAM."""

    status, code, type = 502, "backend_misconfigured", "server_error"


class BackendUnavailable(SluiceError):
    status, code, type = 503, "backend_unavailable", "server_error"


class CatalogInvalid(SluiceError):
    status, code, type = 503, "catalog_invalid", "server_error"


class BackendTimeout(SluiceError):
    status, code, type = 504, "backend_timeout", "server_error"

"""The caller identity of a request, as API Gateway established it (Lambda authorizer or SigV4)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sluice.auth.roles import Role, principal_role
from sluice.errors import IdentityNotAccepted, Unauthenticated
from sluice.settings import get_settings


@dataclass(frozen=True)
class Caller:
    # A tenant id for API-key callers, the IAM principal ARN for SigV4 callers: what catalog rules match.
    identity: str
    auth: str
    key_id: str | None = None
    # consumer or operator (sluice.auth.roles): operations routes need an operator.
    role: Role = Role.CONSUMER

    @property
    def is_operator(self) -> bool:
        return self.role == Role.OPERATOR


# arn:<partition>:sts::<account>:assumed-role/<role>/<session>
_ASSUMED_ROLE = re.compile(r"^arn:(?P<partition>[^:]+):sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/[^/]+$")
# The principal kinds whose ARN names one principal that AWS keeps unique: IAM users and roles (with
# their path) and the account root. Role sessions are mapped to their role above.
_IAM_PRINCIPAL = re.compile(r"^arn:[a-z-]+:iam::\d{12}:(?:root|user/[^*?$]+|role/[^*?$]+)$")
_FEDERATED_USER = re.compile(r"^arn:[a-z-]+:sts::\d{12}:federated-user/")


def principal_identity(user_arn: str) -> str:
    """A role session is identified by its role, so catalog rules are written once per role, not per session.

    A federated user (GetFederationToken) is refused: its name is whatever the IAM user who minted the
    token chose, so two different users could both call themselves `federated-user/bob` and share
    every job and prefix. Any other principal kind Sluice does not know is refused too, rather than
    trusted by accident."""
    match = _ASSUMED_ROLE.match(user_arn)
    if match is not None:
        return f"arn:{match['partition']}:iam::{match['account']}:role/{match['role']}"
    if _FEDERATED_USER.match(user_arn):
        raise IdentityNotAccepted(
            "Federated users (sts:GetFederationToken) are not accepted: their name is chosen by whoever "
            "mints the token, so it cannot identify a caller. Sign with an IAM role session or an IAM user.",
            details={"principal_kind": "federated-user"},
        )
    if not _IAM_PRINCIPAL.match(user_arn):
        raise IdentityNotAccepted(
            "This kind of AWS principal is not accepted as a caller; sign with an IAM role session or an IAM user.",
            details={"principal_kind": "unknown"},
        )
    return user_arn


def caller_from_request_context(request_context: dict[str, Any]) -> Caller:
    authorizer = request_context.get("authorizer") or {}
    if authorizer.get("tenant"):
        # Only the authorizer writes this context; anything but "operator" is a consumer.
        role = Role.OPERATOR if authorizer.get("role") == Role.OPERATOR.value else Role.CONSUMER
        return Caller(identity=authorizer["tenant"], auth="api_key", key_id=authorizer.get("key_id"), role=role)
    identity = request_context.get("identity") or {}
    if identity.get("userArn"):
        principal = principal_identity(identity["userArn"])
        role = principal_role(principal, get_settings().operator_principals)
        return Caller(identity=principal, auth="iam", role=role)
    raise Unauthenticated("No credentials: send 'Authorization: Bearer <api key>' or sign the request with SigV4.")

"""The caller identity of a request, as API Gateway established it (Lambda authorizer or SigV4)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sluice.auth.roles import Role, principal_role
from sluice.errors import Unauthenticated
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


def principal_identity(user_arn: str) -> str:
    """A role session is identified by its role, so catalog rules are written once per role, not per session."""
    match = _ASSUMED_ROLE.match(user_arn)
    if match is None:
        return user_arn
    return f"arn:{match['partition']}:iam::{match['account']}:role/{match['role']}"


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

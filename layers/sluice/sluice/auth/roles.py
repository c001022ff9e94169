"""Roles: consumers call models and run their own jobs; operators also run the platform (approvals first).

An API key's role is stored on its record (`consumer` unless created with `--role operator`); a SigV4
caller is an operator when its identity (its role ARN for a role session) matches one of the stack's
OperatorPrincipals patterns. Tenant names follow TENANT_PATTERN everywhere they are created or read.
"""

from __future__ import annotations

import re
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from sluice.errors import OperatorRequired


class Role(StrEnum):
    CONSUMER = "consumer"
    OPERATOR = "operator"


# Lower-case letters, digits, '-' and '_', starting with a letter or digit, at most 63 characters:
# safe in S3 prefixes, log fields, SageMaker tags and DynamoDB keys, and never an ARN.
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
TENANT_MAX_LENGTH = 63
_TENANT = re.compile(TENANT_PATTERN)


def tenant_problem(tenant: str | None) -> str | None:
    """Why `tenant` is not a valid tenant name, or None when it is."""
    if not tenant or not tenant.strip():
        return "tenant must not be empty"
    if len(tenant) > TENANT_MAX_LENGTH:
        return f"tenant must be at most {TENANT_MAX_LENGTH} characters (got {len(tenant)})"
    if not _TENANT.fullmatch(tenant):
        return (
            f"tenant {tenant!r} is not a valid tenant name: use lower-case letters, digits, '-' and '_', "
            f"starting with a letter or digit ({TENANT_PATTERN})"
        )
    return None


def validate_tenant(tenant: str) -> str:
    problem = tenant_problem(tenant)
    if problem:
        raise ValueError(problem)
    return tenant


def parse_role(value: str | None) -> Role:
    """A stored or requested role; a record without one is a consumer (keys created before roles existed)."""
    if value is None or value == "":
        return Role.CONSUMER
    try:
        return Role(value)
    except ValueError:
        raise ValueError(f"role must be one of {', '.join(role.value for role in Role)} (got {value!r})") from None


def principal_role(identity: str, operator_principals: tuple[str, ...]) -> Role:
    """A SigV4 caller's role: operator when its identity matches an OperatorPrincipals pattern (fnmatch)."""
    if any(fnmatchcase(identity, pattern) for pattern in operator_principals):
        return Role.OPERATOR
    return Role.CONSUMER


def require_operator(ctx: Any, route: str) -> None:
    """Operations routes call this first: a consumer gets 403 operator_required naming the route.

    `ctx` is the request's RequestContext (anything with a `.caller`)."""
    caller = ctx.caller
    if caller.role != Role.OPERATOR:
        raise OperatorRequired(
            f"{route} needs an operator; caller '{caller.identity}' is a {Role(caller.role).value}. "
            "Use an operator API key (tools/keys.py create --role operator) or an IAM role listed in the "
            "stack's OperatorPrincipals.",
            param="route",
            details={"route": route, "role": Role(caller.role).value},
        )

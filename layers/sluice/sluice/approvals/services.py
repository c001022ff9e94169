"""The approvals store and the Step Functions client, built once per container."""

from __future__ import annotations

from typing import Any

from sluice.approvals.store import ApprovalStore
from sluice.providers import clients
from sluice.settings import get_settings


def store() -> ApprovalStore:
    settings = get_settings()
    return ApprovalStore(clients.get("dynamodb"), settings.approvals_table, settings.job_ttl_days)


def stepfunctions() -> Any:
    return clients.get("stepfunctions")

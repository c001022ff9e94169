"""The approvals table as the approval functions read and write it (clients come from sluice.clients)."""

from __future__ import annotations

from sluice import clients
from sluice.approvals.store import ApprovalStore
from sluice.settings import get_settings


def store() -> ApprovalStore:
    settings = get_settings()
    return ApprovalStore(clients.get("dynamodb"), settings.approvals_table, settings.job_ttl_days)

"""The jobs table, as every job component reads and writes it (clients come from sluice.clients)."""

from __future__ import annotations

from sluice import clients
from sluice.jobs.store import JobStore
from sluice.settings import get_settings


def store() -> JobStore:
    settings = get_settings()
    return JobStore(clients.get("dynamodb"), settings.jobs_table, settings.job_ttl_days)

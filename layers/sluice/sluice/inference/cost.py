"""Estimated cost of one request from the catalog's prices (USD)."""

from __future__ import annotations

from sluice.catalog.models import ModelEntry
from sluice.providers.result import BackendResult


def estimate_cost(entry: ModelEntry, result: BackendResult) -> float:
    pricing = entry.pricing
    cost = (result.input_tokens or 0) / 1000 * pricing.input_per_1k_tokens
    cost += (result.output_tokens or 0) / 1000 * pricing.output_per_1k_tokens
    cost += result.backend_latency_ms / 1000 / 3600 * pricing.instance_hourly_usd
    return round(cost, 10)

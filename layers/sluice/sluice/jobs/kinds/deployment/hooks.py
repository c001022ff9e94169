"""The deployment kind's part of the shared lifecycle (filled in by the deployment work)."""

from __future__ import annotations

from sluice.jobs.kind_hooks import KindHooks

HOOKS = KindHooks()

"""The training kind's part of the shared lifecycle (filled in by the training workflow work)."""

from __future__ import annotations

from sluice.jobs.kind_hooks import KindHooks

HOOKS = KindHooks()

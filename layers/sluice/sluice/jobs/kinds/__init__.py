"""The registry of job kinds: the one place that names them.

Adding a kind: a folder here holding its request model, submit and start, and its hooks (a module
exposing HOOKS, a sluice.jobs.kind_hooks.KindHooks); its template resources (state machine, functions);
and one line in each of JobKind and _HOOK_MODULES. Shared job code asks `hooks(job.kind)` and never
names a kind. A kind's hooks are imported on first use, so a route pays only for the kinds it touches.
"""

from __future__ import annotations

import importlib
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sluice.jobs.kind_hooks import KindHooks


class JobKind(StrEnum):
    ASYNC = "async"
    BATCH = "batch"
    TRAINING = "training"
    DEPLOYMENT = "deployment"


_HOOK_MODULES: dict[JobKind, str] = {
    JobKind.ASYNC: "sluice.jobs.kinds.async_inference.hooks",
    JobKind.BATCH: "sluice.jobs.kinds.batch_transform.hooks",
    JobKind.TRAINING: "sluice.jobs.kinds.training.hooks",
    JobKind.DEPLOYMENT: "sluice.jobs.kinds.deployment.hooks",
}


def hooks(kind: JobKind | str) -> KindHooks:
    return importlib.import_module(_HOOK_MODULES[JobKind(kind)]).HOOKS

"""The audit line every control action of a deployment writes (shift, promote, roll back, scale).

One `logger.info` per action with who asked, what changed and why, so the trail survives in the
function's log group (DOMAIN.md: every control action is logged with who/what/why).
"""

from __future__ import annotations

from typing import Any

from sluice.telemetry import logger

WORKFLOW = "deployment workflow"


def audit(what: str, *, why: str, who: str = WORKFLOW, **facts: Any) -> None:
    logger.info(what, extra={"audit": "deployment", "who": who, "what": what, "why": why, **facts})

"""Lambda authorizer: a bearer API key in, an allow policy with the tenant (or a 401) out."""

from __future__ import annotations

import os

from aws_lambda_powertools import Logger

from sluice import clients
from sluice.auth.authorizer import Unauthorized, authorize

logger = Logger()
dynamodb = clients.get("dynamodb")
TABLE = os.environ["SLUICE_API_KEYS_TABLE"]


@logger.inject_lambda_context
def lambda_handler(event: dict, _context: object) -> dict:
    try:
        decision = authorize(event, dynamodb=dynamodb, table=TABLE)
    except Unauthorized as refused:
        logger.info("request refused", extra={"method_arn": event.get("methodArn"), "reason": refused.reason})
        raise
    context = decision["context"]
    logger.info(
        "request allowed",
        extra={"tenant": decision["principalId"], "key_id": context["key_id"], "role": context["role"]},
    )
    return decision

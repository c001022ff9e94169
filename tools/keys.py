#!/usr/bin/env python3
"""Create, list and revoke Sluice API keys against a deployed stack.

    python tools/keys.py --stack STACK [--region R] create --tenant T [--role consumer|operator]
                                                        [--name N] [--usage-plan-id ID]
    python tools/keys.py --stack STACK list [--tenant T]
    python tools/keys.py --stack STACK revoke --key-id ID
    python tools/keys.py --stack STACK webhook-secret --tenant T [--rotate] [--kms-key-id K]
    python tools/keys.py --stack STACK callback-topics --tenant T [--allow PATTERN ...] [--clear]

The keys table and the default usage plan come from the stack outputs ApiKeysTableName and
DefaultUsagePlanId; --table and --usage-plan-id override them, so no stack is needed when both are given.
The logic lives in sluice.auth.keys: this tool parses arguments, resolves names and prints.

`webhook-secret` creates (or with --rotate replaces) a caller's webhook signing secret, an SSM
SecureString under /sluice/STACK/webhook-secrets/, and prints it once. `callback-topics` shows or sets
the SNS topics (ARN patterns) a caller's job callbacks may publish to, in /sluice/STACK/callback-topics.
--tenant takes any caller identity: a tenant id, or an IAM principal ARN for SigV4 callers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers" / "sluice"))

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from sluice.auth import keys, roles
from sluice.jobs import callback_topics, webhook_secrets

TABLE_OUTPUT = "ApiKeysTableName"
USAGE_PLAN_OUTPUT = "DefaultUsagePlanId"
LIST_COLUMNS = ("key_id", "tenant", "role", "name", "status", "created_at", "key_hint")


class ToolError(Exception):
    """A problem the operator can fix; printed as one line, exit status 1."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="keys.py", description="Manage Sluice API keys (hashed at rest).")
    parser.add_argument("--stack", help="CloudFormation stack whose outputs name the keys table and usage plan")
    parser.add_argument("--region", help="AWS region (default: the usual AWS configuration)")
    parser.add_argument("--table", help=f"API keys table name (overrides the stack output {TABLE_OUTPUT})")
    parser.add_argument("--endpoint-url", help="endpoint for every AWS client (local mode)")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{create,list,revoke,webhook-secret,callback-topics}"
    )

    create = commands.add_parser("create", help="create a key; the plain key is printed once")
    create.add_argument(
        "--tenant", required=True, help=f"lower-case letters, digits, '-' and '_' ({roles.TENANT_PATTERN})"
    )
    create.add_argument(
        "--role",
        choices=[role.value for role in roles.Role],
        default=roles.Role.CONSUMER.value,
        help="consumer (default): models and own jobs; operator: also operations routes such as approvals",
    )
    create.add_argument("--name", default="", help="a label for people, e.g. who holds the key")
    create.add_argument(
        "--usage-plan-id", help=f"API Gateway usage plan (overrides the stack output {USAGE_PLAN_OUTPUT})"
    )

    listing = commands.add_parser("list", help="list keys (never hashes or plain keys)")
    listing.add_argument("--tenant", help="only this tenant's keys")

    revoke = commands.add_parser("revoke", help="revoke a key and disable its API Gateway key")
    revoke.add_argument("--key-id", required=True)

    secret = commands.add_parser("webhook-secret", help="create or rotate a caller's webhook signing secret")
    secret.add_argument("--tenant", "--caller", dest="tenant", required=True, help="tenant id or principal ARN")
    secret.add_argument("--rotate", action="store_true", help="replace an existing secret (receivers must switch)")
    secret.add_argument("--kms-key-id", help="KMS key of the SecureString (default: the account's aws/ssm key)")
    secret.add_argument("--path", help="SSM path of the secrets (default: /sluice/STACK/webhook-secrets)")

    topics = commands.add_parser("callback-topics", help="show or set the SNS topics a caller's callbacks may use")
    topics.add_argument("--tenant", "--caller", dest="tenant", required=True, help="tenant id or principal ARN")
    topics.add_argument("--allow", action="append", default=[], metavar="PATTERN", help="topic ARN pattern to add")
    topics.add_argument("--clear", action="store_true", help="remove every topic of this caller first")
    topics.add_argument("--parameter", help="SSM parameter (default: /sluice/STACK/callback-topics)")
    return parser


class Clients:
    """boto3 clients for one region and endpoint, built on first use."""

    def __init__(self, region: str | None, endpoint_url: str | None) -> None:
        self._session = boto3.Session(region_name=region)
        self._endpoint_url = endpoint_url
        self._clients: dict[str, Any] = {}

    def __call__(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self._session.client(service, endpoint_url=self._endpoint_url)
        return self._clients[service]


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as error:
        raise ToolError(f"cannot read stack {stack}: {error.response['Error'].get('Message', error)}") from error
    return {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}


def resolve(args: argparse.Namespace, clients: Clients, *, need_plan: bool) -> tuple[str, str | None]:
    """The table name and (for create) the usage plan id: flags first, then the stack outputs."""
    table: str | None = args.table
    plan: str | None = getattr(args, "usage_plan_id", None)
    if table is None or (need_plan and plan is None):
        if not args.stack:
            missing = "--table" if table is None else "--usage-plan-id"
            raise ToolError(f"give --stack, or {missing} directly")
        outputs = stack_outputs(clients("cloudformation"), args.stack)
        if table is None:
            table = outputs.get(TABLE_OUTPUT)
            if not table:
                raise ToolError(f"stack {args.stack} has no output {TABLE_OUTPUT}; pass --table")
        if need_plan and plan is None:
            plan = outputs.get(USAGE_PLAN_OUTPUT)
            if not plan:
                raise ToolError(f"stack {args.stack} has no output {USAGE_PLAN_OUTPUT}; pass --usage-plan-id")
    return table, plan


def format_table(records: Sequence[keys.ApiKeyRecord]) -> str:
    rows = [tuple(column.upper() for column in LIST_COLUMNS)]
    rows += [tuple(str(getattr(record, column) or "") for column in LIST_COLUMNS) for record in records]
    widths = [max(len(row[index]) for row in rows) for index in range(len(LIST_COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def create(args: argparse.Namespace, clients: Clients) -> None:
    table, plan = resolve(args, clients, need_plan=True)
    assert plan is not None
    created = keys.create_key(
        dynamodb=clients("dynamodb"),
        apigateway=clients("apigateway"),
        table=table,
        tenant=args.tenant,
        usage_plan_id=plan,
        name=args.name,
        role=args.role,
    )
    record = created.record
    print("API key created. Store it now: it is shown only this once and cannot be shown again.")
    print()
    print(f"    {created.plain_key}")
    print()
    print(f"key id:      {record.key_id}")
    print(f"tenant:      {record.tenant}")
    print(f"role:        {record.role}")
    if record.name:
        print(f"name:        {record.name}")
    print(f"usage plan:  {record.usage_plan_id}")


def list_(args: argparse.Namespace, clients: Clients) -> None:
    table, _ = resolve(args, clients, need_plan=False)
    records = keys.list_keys(dynamodb=clients("dynamodb"), table=table, tenant=args.tenant)
    if not records:
        print(f"no keys for tenant {args.tenant}" if args.tenant else "no keys")
        return
    print(format_table(records))


def revoke(args: argparse.Namespace, clients: Clients) -> None:
    table, _ = resolve(args, clients, need_plan=False)
    try:
        record = keys.revoke_key(
            dynamodb=clients("dynamodb"), apigateway=clients("apigateway"), table=table, key_id=args.key_id
        )
    except keys.KeyNotFound as error:
        raise ToolError(str(error)) from error
    print(f"revoked {record.key_id} (tenant {record.tenant}) at {record.revoked_at}")


def stack_path(args: argparse.Namespace, override: str | None, leaf: str) -> str:
    if override:
        return override
    if not args.stack:
        raise ToolError(f"give --stack, or the SSM name directly (/sluice/STACK/{leaf})")
    return f"/sluice/{args.stack}/{leaf}"


def webhook_secret(args: argparse.Namespace, clients: Clients) -> None:
    path = stack_path(args, args.path, "webhook-secrets")
    name, secret = webhook_secrets.put_secret(
        clients("ssm"), path, args.tenant, rotate=args.rotate, kms_key_id=args.kms_key_id
    )
    print(f"Webhook signing secret {'rotated' if args.rotate else 'created'} for {args.tenant}.")
    print("Give it to the receiver now: it is shown only this once.")
    print()
    print(f"    {secret}")
    print()
    print(f"parameter:   {name}")
    if args.rotate:
        print("The notifier signs with it within SLUICE_WEBHOOK_SECRET_TTL_SECONDS; accept both secrets until then.")


_ARN_PATTERN = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9*?-]+:[0-9*?]{1,12}:[A-Za-z0-9_*?-]{1,256}$")


def callback_topics_(args: argparse.Namespace, clients: Clients) -> None:
    name = stack_path(args, args.parameter, "callback-topics")
    ssm = clients("ssm")
    try:
        document = callback_topics.parse(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ParameterNotFound":
            raise
        document = callback_topics.CallbackTopics()
    for pattern in args.allow:
        if not _ARN_PATTERN.match(pattern):
            raise ToolError(f"--allow {pattern!r} is not an SNS topic ARN pattern (arn:aws:sns:REGION:ACCOUNT:NAME*)")
    if args.allow or args.clear:
        patterns = [] if args.clear else list(document.callers.get(args.tenant, []))
        patterns += [pattern for pattern in args.allow if pattern not in patterns]
        if patterns:
            document.callers[args.tenant] = patterns
        else:
            document.callers.pop(args.tenant, None)
        text = json.dumps(document.model_dump(), indent=1, sort_keys=True)
        ssm.put_parameter(Name=name, Value=text, Type="String", Overwrite=True)
    allowed = document.callers.get(args.tenant, [])
    print(f"callback topics of {args.tenant} ({name}):")
    print("\n".join(f"    {pattern}" for pattern in allowed) if allowed else "    none: SNS callbacks are refused")


COMMANDS = {
    "create": create,
    "list": list_,
    "revoke": revoke,
    "webhook-secret": webhook_secret,
    "callback-topics": callback_topics_,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    clients = Clients(args.region, args.endpoint_url)
    try:
        COMMANDS[args.command](args, clients)
    except (ToolError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ClientError as error:
        details = error.response.get("Error", {})
        print(f"error: {details.get('Code', 'AWS error')}: {details.get('Message', error)}", file=sys.stderr)
        return 1
    except BotoCoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Create, list and revoke Sluice API keys against a deployed stack.

    python tools/keys.py --stack STACK [--region R] create --tenant T [--role consumer|operator]
                                                        [--name N] [--usage-plan-id ID]
    python tools/keys.py --stack STACK list [--tenant T]
    python tools/keys.py --stack STACK revoke --key-id ID

The keys table and the default usage plan come from the stack outputs ApiKeysTableName and
DefaultUsagePlanId; --table and --usage-plan-id override them, so no stack is needed when both are given.
The logic lives in sluice.auth.keys: this tool parses arguments, resolves names and prints.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers" / "sluice"))

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from sluice.auth import keys, roles

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
    commands = parser.add_subparsers(dest="command", required=True, metavar="{create,list,revoke}")

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


COMMANDS = {"create": create, "list": list_, "revoke": revoke}


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

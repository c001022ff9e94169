"""Validate, publish and show the model catalog.

    python tools/catalog.py validate catalog/example.json
    python tools/catalog.py --stack sluice-dev push catalog/mine.json
    python tools/catalog.py --stack sluice-dev show

`push` validates first: a document the functions would reject never reaches Parameter Store.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers" / "sluice"))

from sluice.catalog.store import CatalogError, dump_catalog, load_catalog_file


def _parameter_name(args: argparse.Namespace) -> str:
    if args.parameter:
        return args.parameter
    import boto3

    stack = boto3.client("cloudformation", region_name=args.region, endpoint_url=args.endpoint_url)
    outputs = stack.describe_stacks(StackName=args.stack)["Stacks"][0].get("Outputs", [])
    for output in outputs:
        if output["OutputKey"] == "CatalogParameterName":
            return output["OutputValue"]
    raise SystemExit(f"stack {args.stack} has no CatalogParameterName output")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", help="deployed stack whose catalog parameter to use")
    parser.add_argument("--parameter", help="SSM parameter name (instead of --stack)")
    parser.add_argument("--region")
    parser.add_argument("--endpoint-url", help="AWS endpoint (local mode)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("validate", help="check a catalog file").add_argument("file")
    commands.add_parser("push", help="validate a catalog file and store it").add_argument("file")
    commands.add_parser("show", help="print the stored catalog")
    args = parser.parse_args(argv)

    if args.command in ("validate", "push"):
        try:
            catalog = load_catalog_file(args.file)
        except CatalogError as exc:
            print(f"{args.file}: invalid catalog", file=sys.stderr)
            for problem in exc.problems:
                print(f"  - {problem}", file=sys.stderr)
            return 1
        print(f"{args.file}: valid, {len(catalog.models)} models: {', '.join(sorted(catalog.models))}")
        if args.command == "validate":
            return 0

    import boto3

    ssm = boto3.client("ssm", region_name=args.region, endpoint_url=args.endpoint_url)
    name = _parameter_name(args)
    if args.command == "push":
        ssm.put_parameter(Name=name, Value=dump_catalog(catalog), Type="String", Tier="Advanced", Overwrite=True)
        print(f"stored in {name}; functions pick it up within their catalog TTL")
    else:
        print(ssm.get_parameter(Name=name)["Parameter"]["Value"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

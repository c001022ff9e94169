"""Fuzz every operation of the local API with schemathesis: start local mode, run, print the summary, stop.

    .venv/bin/python tools/fuzz.py [--max-examples 50] [--checks not_a_server_error] [extra st args...]

The operations come from the API's own OpenAPI document (/v1/docs?format=json), so routes added later are
fuzzed without editing this file. Exit status is schemathesis'.
"""

from __future__ import annotations

import argparse
import os
import secrets
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "local"))

from sluice_local.launch import LocalProcess  # noqa: E402 - tools run without an installed package

START_TIMEOUT_SECONDS = 180


def start_local(key: str, state_dir: str | None, operator_key: str | None = None) -> tuple[LocalProcess, str]:
    settings = {"SLUICE_LOCAL_API_KEY": key}
    if operator_key:
        settings["SLUICE_LOCAL_OPERATOR_KEY"] = operator_key
    if state_dir:
        settings["SLUICE_LOCAL_STATE_DIR"] = state_dir
    try:
        local = LocalProcess(settings, START_TIMEOUT_SECONDS).start()
    except RuntimeError as error:
        raise SystemExit(str(error)) from None
    return local, local.url


def stop_local(local: LocalProcess) -> None:
    local.stop()


def schemathesis_command(url: str, key: str, max_examples: int, checks: str, extra: list[str]) -> list[str]:
    return [
        str(Path(sys.executable).parent / "schemathesis"),
        "run",
        f"{url}/v1/docs?format=json",
        "--url",
        url,
        "-H",
        f"Authorization: Bearer {key}",
        "--checks",
        checks,
        "--max-examples",
        str(max_examples),
        "--no-color",
        *extra,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=50)
    parser.add_argument("--checks", default="not_a_server_error")
    parser.add_argument("--state-dir", default=None, help="local mode's state dir (trained model artifacts)")
    parser.add_argument(
        "--as",
        dest="roles",
        choices=["consumer", "operator", "both"],
        default="both",
        help="whose key sends the requests: operations routes answer a consumer only 403 (default: both in turn)",
    )
    args, extra = parser.parse_known_args(argv)
    keys = {
        "consumer": os.environ.get("SLUICE_FUZZ_API_KEY") or f"sk-sluice-fuzz-{secrets.token_hex(8)}",
        "operator": os.environ.get("SLUICE_FUZZ_OPERATOR_KEY") or f"sk-sluice-fuzz-ops-{secrets.token_hex(8)}",
    }
    roles = ["consumer", "operator"] if args.roles == "both" else [args.roles]
    process, url = start_local(keys["consumer"], args.state_dir, keys["operator"])
    worst = 0
    try:
        for role in roles:
            key = keys[role]
            command = schemathesis_command(url, key, args.max_examples, args.checks, extra)
            print(f"+ ({role} key)", " ".join(command).replace(key, "$KEY"), flush=True)
            worst = max(worst, subprocess.run(command, cwd=ROOT, check=False).returncode)
        return worst
    finally:
        stop_local(process)


if __name__ == "__main__":
    sys.exit(main())

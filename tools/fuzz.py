"""Fuzz every operation of the local API with schemathesis: start local mode, run, print the summary, stop.

    .venv/bin/python tools/fuzz.py [--max-examples 50] [--checks not_a_server_error] [extra st args...]

The operations come from the API's own OpenAPI document (/v1/docs?format=json), so routes added later are
fuzzed without editing this file. Exit status is schemathesis'.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 180


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_local(key: str, state_dir: str | None, operator_key: str | None = None) -> tuple[subprocess.Popen, str]:
    api_port = _free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLUICE_", "POWERTOOLS_"))},
        "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "sluice"), str(ROOT / "local")]),
        "SLUICE_LOCAL_PORT": str(api_port),
        "SLUICE_LOCAL_AWS_PORT": str(_free_port()),
        "SLUICE_LOCAL_SAGEMAKER_PORT": str(_free_port()),
        "SLUICE_LOCAL_API_KEY": key,
        **({"SLUICE_LOCAL_OPERATOR_KEY": operator_key} if operator_key else {}),
        "PYTHONUNBUFFERED": "1",
    }
    if state_dir:
        env["SLUICE_LOCAL_STATE_DIR"] = state_dir
    process = subprocess.Popen(
        [sys.executable, "-m", "sluice_local"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if line.startswith("SLUICE_LOCAL_READY"):
            # Keep draining so the stack never blocks on a full pipe; its output is not part of the report.
            threading.Thread(target=lambda: [None for _ in process.stdout], daemon=True).start()
            return process, f"http://127.0.0.1:{api_port}"
    stop_local(process)
    raise SystemExit("local stack did not start:\n" + "".join(output[-60:]))


def stop_local(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


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

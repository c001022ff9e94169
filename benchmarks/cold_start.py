"""Cold start: time to import each handler in a fresh interpreter, next to importing boto3 alone.

The handler's module scope is what a Lambda cold start pays before the first request. The Lambda
environment variables are set because libraries behave differently there (the X-Ray SDK skips
building its sampling client, ~160 ms here, when it sees it runs in Lambda).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 15
ENV_SETUP = (
    "import os, sys, time; "
    "os.environ.update(AWS_DEFAULT_REGION='us-east-1', "
    "SLUICE_API_KEYS_TABLE='bench', LAMBDA_TASK_ROOT='/var/task', AWS_LAMBDA_FUNCTION_NAME='bench'); "
    f"sys.path[:0] = [{str(ROOT / 'layers' / 'sluice')!r}]; "
)
CASES = {
    "python (nothing)": "pass",
    "import boto3": "import boto3",
    "api handler": f"sys.path.insert(0, {str(ROOT / 'functions' / 'api')!r}); import app",
    "authorizer handler": f"sys.path.insert(0, {str(ROOT / 'functions' / 'authorizer')!r}); import app",
}


def measure(code: str) -> float:
    script = ENV_SETUP + f"t = time.perf_counter(); {code}; print((time.perf_counter() - t) * 1000)"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    print(f"{'module scope':<22}{'median ms':>10}{'min ms':>10}  (n={RUNS}, bytecode cached)")
    for name, code in CASES.items():
        measure(code)  # compile .pyc first, as a deployed package ships warm bytecode caches
        samples = [measure(code) for _ in range(RUNS)]
        print(f"{name:<22}{statistics.median(samples):>10.1f}{min(samples):>10.1f}")


if __name__ == "__main__":
    main()

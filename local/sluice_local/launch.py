"""`make local` as a child process on free ports: what the end-to-end tests and `make fuzz` start and stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READY = "SLUICE_LOCAL_READY"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LocalProcess:
    """One `python -m sluice_local` on free ports. `settings` are SLUICE_LOCAL_* variables (keys, state dir);
    the caller's own AWS_, SLUICE_ and POWERTOOLS_ variables are left out so nothing leaks in."""

    def __init__(self, settings: dict[str, str], start_timeout: float = 180) -> None:
        self.ports = {name: free_port() for name in ("api", "aws", "sagemaker")}
        self.settings = settings
        self.start_timeout = start_timeout
        self.process: subprocess.Popen | None = None
        self.output: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['api']}"

    def start(self) -> LocalProcess:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLUICE_", "POWERTOOLS_"))},
            "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "sluice"), str(ROOT / "local")]),
            "SLUICE_LOCAL_PORT": str(self.ports["api"]),
            "SLUICE_LOCAL_AWS_PORT": str(self.ports["aws"]),
            "SLUICE_LOCAL_SAGEMAKER_PORT": str(self.ports["sagemaker"]),
            "PYTHONUNBUFFERED": "1",
            **self.settings,
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sluice_local"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                break
            self.output.append(line)
            if line.startswith(READY):
                # Keep draining its output so the process never blocks on a full pipe.
                threading.Thread(target=self._drain, daemon=True).start()
                return self
        self.stop()
        raise RuntimeError("local stack did not start:\n" + "".join(self.output[-60:]))

    def _drain(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, as Ctrl-C would; killed if it does not stop in time. Returns the exit status."""
        if not self.running():
            return self.process.returncode if self.process else None
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

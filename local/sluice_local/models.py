"""Model servers for local mode: `models/iris/serve.py` in subprocesses, as SageMaker runs its containers.

    model = start_model("v2", state_dir / "models" / "iris-v2")
    model.url        # http://127.0.0.1:<port>; POST {url}/invocations
    model.stop()

Each version needs its own model directory: the server trains and saves an artifact there at first
start, and refuses a directory holding another version's. The server's stdout and stderr go to
`log_path` (default: a temporary file, removed by `stop()`); errors quote its last lines.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from sluice_local._http import LOOPBACK, require_loopback

ROOT = Path(__file__).resolve().parents[2]
SERVE = ROOT / "models" / "iris" / "serve.py"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.05
_TAIL_BYTES = 4000
# A free port picked here can be taken by someone else before the server binds it: retry with another.
_PORT_ATTEMPTS = 3


class ModelStartError(RuntimeError):
    """The model server exited or did not become ready; the message carries its log's last lines."""


@dataclass
class RunningModel:
    """A started model server: GET {url}/ping answered 200."""

    url: str
    version: str
    process: subprocess.Popen[bytes]
    log_path: Path
    model_dir: Path
    _owns_log: bool = field(default=False, repr=False)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, limit: int = _TAIL_BYTES) -> str:
        return _tail(self.log_path, limit)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM (the server drains its requests), SIGKILL after `timeout`; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._owns_log:
            self.log_path.unlink(missing_ok=True)
            self._owns_log = False
        return self.process.returncode

    def __enter__(self) -> RunningModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# The name the orchestration code may use for the same thing.
ModelProcess = RunningModel


def start_model(
    version: str,
    model_dir: Path,
    host: str = LOOPBACK,
    port: int = 0,
    *,
    timeout: float = START_TIMEOUT_SECONDS,
    log_path: Path | None = None,
    serve_script: Path = SERVE,
    pin_version: bool = True,
) -> RunningModel:
    """Start `serve.py` for model `version` on `host:port` (0: a free port); return once it is ready.

    `pin_version` False serves whatever artifact `model_dir` holds (a trained one, whose version is its training
    job's), `version` being only this process's name.

    Raises ModelStartError, with the server's log tail, if it exits or has not answered /ping with 200
    within `timeout` seconds (it is then killed).
    """
    require_loopback(host)
    owns_log = log_path is None
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"sluice-model-{version}-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    try:
        for attempt in range(1, _PORT_ATTEMPTS + 1):
            bind_port = port or _free_port(host)
            try:
                model = _start(version, Path(model_dir), host, bind_port, timeout, log_path, serve_script, pin_version)
            except _PortTaken:
                if port or attempt == _PORT_ATTEMPTS:
                    raise ModelStartError(
                        f"model {version}: port {bind_port} on {host} is in use\n{_tail(log_path)}"
                    ) from None
                continue
            model._owns_log = owns_log
            return model
    except BaseException:
        if owns_log:
            log_path.unlink(missing_ok=True)
        raise
    raise AssertionError("unreachable")


class _PortTaken(Exception):
    pass


def _start(
    version: str,
    model_dir: Path,
    host: str,
    port: int,
    timeout: float,
    log_path: Path,
    serve_script: Path,
    pin_version: bool = True,
) -> RunningModel:
    env = {
        **os.environ,
        "SAGEMAKER_BIND_TO_PORT": str(port),
        "SLUICE_MODEL_BIND": host,
        "SM_MODEL_DIR": str(model_dir),
        # Empty: serve.py takes the stored artifact's version.
        "SLUICE_MODEL_VERSION": version if pin_version else "",
        "PYTHONUNBUFFERED": "1",
    }
    start_offset = log_path.stat().st_size if log_path.exists() else 0
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(  # noqa: S603 - our own script, run by this interpreter
            [sys.executable, str(serve_script), "serve"],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    model = RunningModel(url=url, version=version, process=process, log_path=log_path, model_dir=model_dir)
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            log = _tail(log_path, offset=start_offset)
            if "Address already in use" in log:
                raise _PortTaken()
            raise ModelStartError(f"model {version} exited with code {code} while starting ({url})\n{log}")
        if _ping(host, port):
            return model
        if time.monotonic() >= deadline:
            model.stop(timeout=2)
            raise ModelStartError(
                f"model {version} did not answer {url}/ping with 200 within {timeout:.0f} s\n"
                f"{_tail(log_path, offset=start_offset)}"
            )
        time.sleep(_POLL_SECONDS)


def _ping(host: str, port: int) -> bool:
    conn = http.client.HTTPConnection(host, port, timeout=1)
    try:
        conn.request("GET", "/ping")
        response = conn.getresponse()
        response.read()
        return response.status == 200
    except OSError:
        return False
    finally:
        conn.close()


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _tail(path: Path, limit: int = _TAIL_BYTES, offset: int = 0) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(offset, size - limit))
            return f.read().decode("utf-8", errors="replace").strip()
    except OSError:
        return "(no log)"

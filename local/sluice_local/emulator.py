"""The embedded AWS: moto in server mode, in this process, on loopback.

In-process (rather than a `moto_server` subprocess) so the template's handlers can replace moto's
Lambda invoke and run where moto runs (lambdas.install_moto_lambda_router). moto's backends and
settings are process-wide, so there is one embedded AWS per process.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from inspect import signature

from moto.core.config import default_user_config
from moto.server import ThreadedMotoServer
from moto.stepfunctions import models as stepfunctions_models
from moto.stepfunctions.parser.models import stepfunctions_parser_backends

from sluice_local import endpoints, metric_queries, moto_events, streams


@dataclass
class MotoServer:
    url: str
    host: str
    port: int
    _server: ThreadedMotoServer = field(repr=False)
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)

    def stop(self) -> None:
        self._server.stop()
        # ThreadedMotoServer.stop() ends the serve loop but leaves the listening socket to garbage
        # collection; close it now so the port is free for the next start.
        inner = getattr(self._server, "_server", None)
        if inner is not None:
            inner.server_close()
        # Process-wide moto settings go back as they were (tests use moto's decorators afterwards).
        while self._undo:
            self._undo.pop()()


def start_moto(host: str, port: int) -> MotoServer:
    """Start moto on host:port (0: any free port) with Step Functions execution on; returns once it answers.

    SNS and S3 events moto delivers to Lambda carry what AWS's do (moto_events); DynamoDB stream records
    reach their event source mappings as Lambda delivers them (streams).
    """
    _check_port_free(host, port)
    # werkzeug logs every request at INFO; keep its warnings and errors (moto's 500 tracebacks).
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    server.start()
    real_host, real_port = server.get_host_and_port()
    moto = MotoServer(url=f"http://{real_host}:{real_port}", host=real_host, port=real_port, _server=server)
    try:
        # moto's Step Functions interpreter calls Lambda and the aws-sdk integrations back over
        # HTTP on localhost:$MOTO_PORT (default 5000): tell it the port actually bound.
        _set_env("MOTO_PORT", str(real_port), moto._undo)
        _enable_state_machine_execution(moto)
        moto._undo.append(_keep_task_failure_causes())
        moto._undo.append(moto_events.install())
        # DynamoDB streams reach their event source mappings as on Lambda: in order, in the background,
        # filtered, retried, then parked (moto calls the function inside the write, once, unfiltered).
        moto._undo.append(streams.install(PATCHED_MOTO))
        # GetMetricData keeps to the query's namespace and computes percentiles (the deployment guards').
        moto._undo.append(metric_queries.install(PATCHED_MOTO))
        # UpdateEndpoint and weight updates as on AWS: Updating for a moment, then InService (the deployments').
        moto._undo.append(endpoints.install(PATCHED_MOTO))
    except BaseException:
        moto.stop()
        raise
    return moto


def _check_port_free(host: str, port: int) -> None:
    """Fail fast on a busy port: ThreadedMotoServer.start() would wait forever for a bind that failed."""
    if port == 0:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # The option the server binds with (werkzeug sets it): a port left in TIME_WAIT by a
        # previous run counts as free, as it is for the server.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise OSError(error.errno, f"cannot start the embedded AWS on {host}:{port}: {error.strerror}") from error


def _enable_state_machine_execution(moto: MotoServer) -> None:
    """Turn moto's ASL interpreter on (off by default: executions would just report SUCCEEDED)."""
    previous = default_user_config.get("stepfunctions")
    moto._undo.append(lambda: default_user_config.__setitem__("stepfunctions", previous))
    request = urllib.request.Request(  # noqa: S310 - our own loopback URL
        f"{moto.url}/moto-api/config",
        data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310
        pass
    # GET /moto-api/config does not report this section; the server shares this process's
    # settings, so check them here.
    if not default_user_config.get("stepfunctions", {}).get("execute_state_machine"):
        raise RuntimeError("moto did not enable Step Functions execution (moto-api/config had no effect)")
    # With execution on, the Step Functions API reads the interpreter's backend, but moto's
    # CloudFormation still creates state machines in the plain one, where no API call finds them
    # (moto 5.2.5). Point CloudFormation's lookups (a module global) at the interpreter's backend.
    plain = stepfunctions_models.stepfunctions_backends
    stepfunctions_models.stepfunctions_backends = stepfunctions_parser_backends
    moto._undo.append(lambda: setattr(stepfunctions_models, "stepfunctions_backends", plain))


# The moto release the patches here were written against (requirements-dev.txt pins it).
PATCHED_MOTO = "5.2."


def _keep_task_failure_causes() -> Callable[[], None]:
    """SendTaskFailure's `cause` reaches the waiting task, as on AWS (moto 5.2.5's handler drops it, so a
    denied approval's reason would be lost). Returns the undo."""
    import moto as moto_package
    from moto.core.responses import EmptyResult
    from moto.stepfunctions.responses import StepFunctionResponse

    if not moto_package.__version__.startswith(PATCHED_MOTO):
        # The patch copies moto 5.2's handler: a new moto must be re-checked (does it keep the cause now?).
        raise RuntimeError(
            f"sluice_local patches moto {PATCHED_MOTO}x's SendTaskFailure; "
            f"re-check it for moto {moto_package.__version__}"
        )
    original = StepFunctionResponse.send_task_failure

    def send_task_failure(self: StepFunctionResponse) -> EmptyResult:
        backend = self.stepfunction_backend
        # Only the interpreter's backend takes a cause (the plain one ignores failures altogether).
        extra = (
            {"cause": self._get_param("cause")} if "cause" in signature(backend.send_task_failure).parameters else {}
        )
        backend.send_task_failure(self._get_param("taskToken"), error=self._get_param("error"), **extra)
        return EmptyResult()

    StepFunctionResponse.send_task_failure = send_task_failure
    return lambda: setattr(StepFunctionResponse, "send_task_failure", original)


def _set_env(name: str, value: str, undo: list[Callable[[], None]]) -> None:
    previous = os.environ.get(name)
    os.environ[name] = value
    undo.append(lambda: os.environ.pop(name, None) if previous is None else os.environ.__setitem__(name, previous))

"""The template's Lambda functions, run in this process.

Each function's handler module is imported once under its own module name (every function has an
app.py, so the plain name would clash), with its layers importable as Lambda's /opt/python makes
them. Invocations come from the local API, and from moto itself once install_moto_lambda_router
is in place: Step Functions tasks, SQS event source mappings, SNS and S3 notifications all end in
moto's LambdaFunction.invoke.

Differences from Lambda: all functions share one process, one environment (function_environment)
and one set of imported libraries; the timeout is reported through the context but not enforced.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from sluice_local.deploy import Deployment, FunctionSpec

logger = logging.getLogger(__name__)


@dataclass
class LambdaContext:
    """What a handler's context offers on Lambda's Python runtime."""

    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    identity: Any = None
    client_context: Any = None
    _deadline: float = field(default=0.0, repr=False)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class InvokeResult:
    payload: Any  # the handler's result after a JSON round trip, or the error shape
    function_error: str | None = None  # "Unhandled" when the handler raised


class UnknownFunction(LookupError):
    pass


def error_shape(error: BaseException, request_id: str) -> dict[str, Any]:
    """Lambda's payload for an uncaught exception (Step Functions matches Retry/Catch on errorType)."""
    trace = error.__traceback__
    # From the handler down, as Lambda reports it: the runner's own frame is not the function's.
    trace = trace.tb_next if trace is not None and trace.tb_next is not None else trace
    return {
        "errorMessage": str(error),
        "errorType": type(error).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_tb(trace),
    }


class LambdaRunner:
    def __init__(self, functions: dict[str, FunctionSpec], root: Path | str) -> None:
        self.root = Path(root)
        self._functions = dict(functions)
        # Any name a caller may use: logical id, function name, ARN (and ARN:$LATEST).
        self._names: dict[str, str] = {}
        for logical_id, spec in functions.items():
            for name in (logical_id, spec.physical_name, spec.arn, f"{spec.arn}:$LATEST"):
                self._names[name] = logical_id
        self._modules: dict[str, ModuleType] = {}
        self._import_lock = threading.Lock()

    def knows(self, name: str) -> bool:
        return name in self._names

    def spec(self, name: str) -> FunctionSpec:
        try:
            return self._functions[self._names[name]]
        except KeyError:
            raise UnknownFunction(f"no function {name!r} in the local stack") from None

    def invoke(self, name: str, event: Any) -> Any:
        """Run the handler; a raised exception comes back as Lambda's error shape (see invoke_result)."""
        return self.invoke_result(name, event).payload

    def invoke_result(self, name: str, event: Any) -> InvokeResult:
        spec = self.spec(name)
        handler = self.handler(name)
        context = self._context(spec)
        try:
            result = handler(event, context)
            # Lambda returns what survives JSON serialisation, nothing more.
            return InvokeResult(json.loads(json.dumps(result)))
        except Exception as error:  # noqa: BLE001 - any handler failure is the function's error
            logger.info("%s failed: %s: %s", spec.logical_id, type(error).__name__, error)
            return InvokeResult(error_shape(error, context.aws_request_id), "Unhandled")

    def handler(self, name: str) -> Callable[[Any, Any], Any]:
        """The function's handler, importing its module on first use (the cold start)."""
        spec = self.spec(name)
        module_path, _, attribute = spec.handler.rpartition(".")
        return getattr(self._module(spec, module_path), attribute)

    def _module(self, spec: FunctionSpec, module_path: str) -> ModuleType:
        with self._import_lock:
            if spec.logical_id in self._modules:
                return self._modules[spec.logical_id]
            if spec.code_dir is None:
                raise UnknownFunction(f"{spec.logical_id} has no local code folder to run")
            code_dir = self.root / spec.code_dir
            for folder in (*(self._layer_path(d) for d in spec.layer_dirs), code_dir):
                if str(folder) not in sys.path:
                    sys.path.append(str(folder))
            file = code_dir / (module_path.replace(".", "/") + ".py")
            module_name = f"sluice_local_function_{spec.logical_id}"
            loader_spec = importlib.util.spec_from_file_location(module_name, file)
            if loader_spec is None or loader_spec.loader is None:
                raise UnknownFunction(f"cannot load {file} for {spec.logical_id}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            try:
                loader_spec.loader.exec_module(module)
            except BaseException:
                del sys.modules[module_name]
                raise
            self._modules[spec.logical_id] = module
            return module

    def _layer_path(self, layer_dir: Path) -> Path:
        folder = self.root / layer_dir
        # A prebuilt Python layer keeps its packages under python/ (Lambda's /opt/python).
        return folder / "python" if (folder / "python").is_dir() else folder

    @staticmethod
    def _context(spec: FunctionSpec) -> LambdaContext:
        now = time.gmtime()
        return LambdaContext(
            function_name=spec.physical_name,
            function_version="$LATEST",
            invoked_function_arn=spec.arn,
            memory_limit_in_mb=spec.memory,
            aws_request_id=str(uuid.uuid4()),
            log_group_name=f"/aws/lambda/{spec.physical_name}",
            log_stream_name=f"{time.strftime('%Y/%m/%d', now)}/[$LATEST]{uuid.uuid4().hex}",
            _deadline=time.monotonic() + spec.timeout,
        )


def function_environment(deployment: Deployment, aws_url: str, region: str) -> dict[str, str]:
    """The process environment the template's handlers need, to apply before their first import.

    The union of every function's variables (one process runs them all, so they must agree),
    every AWS client pointed at the embedded AWS, and credentials that only it accepts.
    """
    environment: dict[str, str] = {}
    owners: dict[str, str] = {}
    conflicts = []
    for logical_id, spec in deployment.functions.items():
        for key, value in spec.environment.items():
            if key in environment and environment[key] != value:
                conflicts.append(f"{key} ({owners[key]}={environment[key]!r}, {logical_id}={value!r})")
            environment.setdefault(key, value)
            owners.setdefault(key, logical_id)
    if conflicts:
        raise ValueError("functions run in one process locally but disagree on: " + "; ".join(conflicts))
    environment.update(
        AWS_ENDPOINT_URL=aws_url,
        AWS_ACCESS_KEY_ID="local",
        AWS_SECRET_ACCESS_KEY="local",  # noqa: S106 - the embedded AWS accepts anything
        AWS_DEFAULT_REGION=region,
        AWS_REGION=region,
    )
    return environment


_original_invoke: Callable[..., Any] | None = None


def install_moto_lambda_router(runner: LambdaRunner) -> Callable[[], None]:
    """Make moto run the template's functions in-process; returns a function that undoes it.

    Functions moto knows but the runner does not (created later through the API) keep moto's
    own behaviour. A handler exception is returned as Lambda does: header x-amz-function-error
    and an {"errorType", "errorMessage"} body, which Step Functions' Retry/Catch match on.
    """
    from moto.awslambda.models import LambdaFunction

    global _original_invoke
    if _original_invoke is None:
        _original_invoke = LambdaFunction.invoke
    original = _original_invoke

    def invoke(self: Any, body: Any, request_headers: Any, response_headers: Any) -> bytes:
        if not runner.knows(self.function_name):
            return original(self, body, request_headers, response_headers)
        if isinstance(body, bytes):
            body = body.decode()
        event = json.loads(body) if body else {}
        headers = {str(name).lower(): value for name, value in dict(request_headers or {}).items()}
        if headers.get("x-amz-invocation-type") == "Event":
            # Asynchronous: Lambda answers 202 at once and runs the function afterwards.
            threading.Thread(target=runner.invoke_result, args=(self.function_name, event), daemon=True).start()
            return b""
        result = runner.invoke_result(self.function_name, event)
        if result.function_error:
            response_headers["x-amz-function-error"] = result.function_error
        return json.dumps(result.payload).encode()

    LambdaFunction.invoke = invoke

    def uninstall() -> None:
        LambdaFunction.invoke = original

    return uninstall

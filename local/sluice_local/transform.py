"""SageMaker batch transform, really run: transform jobs created in the embedded moto execute against
the local model processes.

moto records a transform job and reports it Completed at once without running anything. With
`install_transform_runner(resolve_model, aws_url)` (in the process that runs moto), CreateTransformJob
still goes through moto, which records the job, but the job is then InProgress and a background thread
runs it as SageMaker documents; DescribeTransformJob reports Completed, Failed (with a FailureReason)
or, after StopTransformJob (which moto lacks and this adds), Stopping then Stopped. Step Functions'
`aws-sdk:sagemaker:createTransformJob` and describeTransformJob polling see the same.

Accepted at creation, as SageMaker does: a ModelName unknown to SageMaker is a ValidationException
("Could not find model ..."), and a job name already used is ResourceInUse.

What a job does:

- lists every object under TransformInput.DataSource.S3DataSource.S3Uri (S3Prefix; ManifestFile: see
  below) in the embedded S3, in key order, each processed on its own (records of two objects never share a mini-batch);
  CompressionType Gzip is decompressed;
- SplitType Line: one record per non-empty line; None: the whole object is one record;
- DataProcessing.InputFilter (a JSONPath, see below) selects what of each record goes to the model;
- BatchStrategy MultiRecord: records joined with newlines into mini-batches of at most MaxPayloadInMB
  (default 6; 0: no limit); SingleRecord (the default here): one record per request;
- each mini-batch is POSTed to `<url>/invocations` of the model process serving ModelName, which
  `resolve_model(model_name)` gives (None: Failed, "Could not find model ..."), with the job's
  ContentType and Accept; ModelClientConfig's InvocationsTimeoutInSeconds (600) and
  InvocationsMaxRetries (3, for 5xx answers and unreachable models) apply;
- the output of object `<prefix><name>` is written to `<S3OutputPath>/<name>.out`, where `<name>` is
  the key after the last "/" of the input prefix (an S3Uri naming one object gives its base name).
  As SageMaker does, an object's .out is written only if all of its records succeeded, the other
  objects go on when one fails (the job is then Failed), and a stopped job writes nothing.

Per-record outputs and AssembleWith:

- AssembleWith Line: each record's output, then a newline. A mini-batch's response is split into
  per-record outputs by its lines (SageMaker's contract for per-record output: CSV or JSON Lines);
  a response whose line count does not match is written as it came (one line per mini-batch), except
  with JoinSource Input, which needs one output per record and fails the object.
- `split_predictions` (on by default, as the platform's iris model needs): a JSON response
  `{"predictions": [...]}` with exactly one prediction per record of the mini-batch is split into one
  JSON line per prediction. **SageMaker does not do this**: on AWS such a response is written as one
  line per mini-batch (and a join over a multi-record mini-batch fails). Turn it off to see AWS's output.
- AssembleWith None (SageMaker's default): the responses concatenated as they came.

JoinSource Input (SageMaker's documented shapes, "Associate Prediction Results with Input Records"):

- JSON / JSON Lines input: an object record gets the output under "SageMakerOutput"; any other record
  becomes {"SageMakerInput": record, "SageMakerOutput": output}; the output is parsed as JSON when it
  is JSON, else kept as a string;
- CSV input, CSV Accept: the input row's columns followed by the output's (CSV out);
- CSV input, other Accept (the iris model answers JSON): SageMaker takes the row as a JSON array and
  appends the output; written as a JSON array line: the row's values (numbers where they are JSON
  numbers, else strings) followed by the output value (an output array is appended element-wise).
  SageMaker documents CSV-with-CSV and JSON-with-JSON only; this mixed case is the local reading.
- OutputFilter then selects from the joined record (without a join, from the output).

JSONPath filters: SageMaker's documented subset: `$`, `.name`, `.*`, `['a','b']`, `[i]`, `[i,j]` (negative
indexes allowed) and slices `[a:b]`, whose end is **inclusive** as SageMaker documents (`$[1:4]` is the
second to fifth columns). A CSV row is a JSON array of its columns.

S3DataType ManifestFile reads the objects the manifest lists (`[{"prefix": ...}, "key", ...]`) and
nothing else; outputs are named after the entries (`<S3OutputPath>/<entry>.out`).

Not emulated: AugmentedManifestFile data sources, RecordIO / TFRecord splits,
MaxConcurrentTransforms (mini-batches run one after another), the model's Environment (the model
process is already running), DataCaptureConfig, instance counts and types.
"""

from __future__ import annotations

import csv
import gzip
import http.client
import inspect
import io
import json
import logging
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from moto.core.responses import EmptyResult
from moto.core.utils import utcnow
from moto.sagemaker import models as sagemaker_models
from moto.sagemaker import responses as sagemaker_responses
from moto.sagemaker.exceptions import MissingModel, ResourceInUseException, ValidationError

from sluice_local.embedded_clients import embedded_s3

log = logging.getLogger("sluice_local.transform")

ModelResolver = Callable[[str], str | None]

DEFAULT_MAX_PAYLOAD_MB = 6
DEFAULT_INVOCATION_TIMEOUT_SECONDS = 600.0
DEFAULT_INVOCATION_MAX_RETRIES = 3
CONNECT_TIMEOUT_SECONDS = 2.0
MAX_FAILURE_REASON = 1024
_MAX_MODEL_MESSAGE = 600
_JSON_TYPES = ("application/json", "application/jsonlines", "application/x-jsonlines", "application/json-lines")
_JSON_NUMBER = re.compile(r"^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$")
_TERMINAL = ("Completed", "Failed", "Stopped")

_lock = threading.Lock()
_installed: TransformRunner | None = None


class _ObjectFailed(Exception):
    """One input object failed; the message is the job's FailureReason if it is the first."""


class _Stopped(Exception):
    pass


def install_transform_runner(
    resolve_model: ModelResolver, aws_url: str, region: str = "us-east-1", *, split_predictions: bool = True
) -> TransformRunner:
    """Make transform jobs created in this process's moto really run; `runner.uninstall()` undoes it."""
    runner = TransformRunner(resolve_model, aws_url, region, split_predictions=split_predictions)
    runner.install()
    return runner


@dataclass
class TransformRunner:
    resolve_model: ModelResolver
    aws_url: str
    region: str = "us-east-1"
    split_predictions: bool = True
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _jobs: dict[tuple[str, str, str], tuple[threading.Thread, threading.Event]] = field(
        default_factory=dict, repr=False
    )
    _jobs_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _s3: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------ the moto patch
    def install(self) -> None:
        global _installed
        with _lock:
            if _installed is not None:
                raise RuntimeError("a transform runner is already installed in this process (moto is process-wide)")
            _installed = self
        backend_class = sagemaker_models.SageMakerModelBackend
        response_class = sagemaker_responses.SageMakerResponse
        original_create = backend_class.create_transform_job
        signature = inspect.signature(original_create)
        runner = self

        def create_transform_job(backend: Any, *args: Any, **kwargs: Any) -> Any:
            bound = signature.bind(backend, *args, **kwargs).arguments
            name, model_name = bound["transform_job_name"], bound["model_name"]
            if name in backend.transform_jobs:
                arn = sagemaker_models.FakeTransformJob.arn_formatter(name, backend.account_id, backend.region_name)
                raise ResourceInUseException(
                    "Job name must be unique within an AWS account and region, and a job with this name "
                    f"already exists ({arn})"
                )
            if model_name not in backend._models:
                raise MissingModel(_arn("model", model_name, backend))
            job = original_create(backend, *args, **kwargs)
            job.transform_job_status = "InProgress"
            job.transform_end_time = None
            job.failure_reason = None  # moto's "" would show as an empty FailureReason; AWS has none
            runner._start(backend, job)
            return job

        def stop_transform_job(backend: Any, transform_job_name: str) -> None:
            job = backend.transform_jobs.get(transform_job_name)
            if job is None:
                raise ValidationError(
                    f"Could not find transform job '{_arn('transform-job', transform_job_name, backend)}'."
                )
            if job.transform_job_status in _TERMINAL:
                raise ValidationError(
                    f"Transform job {transform_job_name} is {job.transform_job_status}; only a job in progress can "
                    "be stopped."
                )
            runner._request_stop(backend, job)

        def stop_transform_job_action(response: Any) -> EmptyResult:
            response.sagemaker_backend.stop_transform_job(response._get_param("TransformJobName"))
            return EmptyResult()

        backend_class.create_transform_job = create_transform_job
        backend_class.stop_transform_job = stop_transform_job
        response_class.stop_transform_job = stop_transform_job_action

        def undo() -> None:
            backend_class.create_transform_job = original_create
            del backend_class.stop_transform_job
            del response_class.stop_transform_job

        self._undo.append(undo)

    def uninstall(self, timeout: float = 10.0) -> None:
        """Restore moto; running jobs are stopped (reported Stopped) and awaited for up to `timeout` s."""
        global _installed
        while self._undo:
            self._undo.pop()()
        with self._jobs_lock:
            running = list(self._jobs.values())
        for _, stop in running:
            stop.set()
        for thread, _ in running:
            thread.join(timeout)
        with _lock:
            if _installed is self:
                _installed = None

    # ------------------------------------------------------------------ job lifecycle
    def _start(self, backend: Any, job: Any) -> None:
        key = (backend.account_id, backend.region_name, job.transform_job_name)
        stop = threading.Event()
        thread = threading.Thread(
            target=self._run, args=(key, job, stop), name=f"transform-{job.transform_job_name}", daemon=True
        )
        with self._jobs_lock:
            self._jobs[key] = (thread, stop)
        thread.start()

    def _request_stop(self, backend: Any, job: Any) -> None:
        _set_status(job, "Stopping")
        with self._jobs_lock:
            entry = self._jobs.get((backend.account_id, backend.region_name, job.transform_job_name))
        if entry is not None:
            entry[1].set()

    def _run(self, key: tuple[str, str, str], job: Any, stop: threading.Event) -> None:
        account_id, region, name = key
        job.transform_start_time = utcnow()
        try:
            failures = self._execute(job, account_id, region, stop)
        except _Stopped:
            _finish(job, "Stopped")
        except _ObjectFailed as failed:
            _finish(job, "Failed", str(failed))
        except Exception as exc:
            log.exception("transform job %s failed unexpectedly", name)
            _finish(job, "Failed", f"InternalServerError: the local transform runner failed: {exc!r}")
        else:
            if stop.is_set():
                _finish(job, "Stopped")
            elif failures:
                reason = failures[0]
                if len(failures) > 1:
                    reason += f" ({len(failures) - 1} more input object(s) failed too)"
                _finish(job, "Failed", reason)
            else:
                _finish(job, "Completed")
        finally:
            with self._jobs_lock:
                self._jobs.pop(key, None)
        log.info("transform job %s: %s %s", name, job.transform_job_status, job.failure_reason or "")

    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = embedded_s3(self.aws_url, self.region)
        return self._s3

    def _execute(self, job: Any, account_id: str, region: str, stop: threading.Event) -> list[str]:
        """Run the job; returns the failure reasons of the input objects that failed."""
        url = self.resolve_model(job.model_name)
        if url is None:
            model_arn = f"arn:aws:sagemaker:{region}:{account_id}:model/{job.model_name}"
            raise _ObjectFailed(f'ClientError: Could not find model "{model_arn}": no local model process serves it.')
        spec = _JobSpec.from_job(job, self.split_predictions)
        s3 = self._client()
        if spec.manifest:
            # The manifest's objects, exactly: its prefix names their folder (and the output names).
            spec.input_bucket, spec.input_prefix, keys = _read_manifest(s3, spec.input_bucket, spec.input_prefix)
        else:
            keys = _list_objects(s3, spec.input_bucket, spec.input_prefix)
        if not keys:
            raise _ObjectFailed(
                f'ClientError: No S3 objects found under S3 URL "{spec.input_uri}" given in input data source. '
                f"Please ensure that the bucket exists in the selected region ({region}) and that objects exist "
                "under that S3 prefix."
            )
        outputs: list[tuple[str, bytes]] = []
        failures = []
        for key in keys:
            if stop.is_set():
                raise _Stopped()
            try:
                data = s3.get_object(Bucket=spec.input_bucket, Key=key)["Body"].read()
                outputs.append(
                    (spec.output_key(key), spec.transform_object(data, url, f"s3://{spec.input_bucket}/{key}", stop))
                )
            except _ObjectFailed as failed:
                failures.append(str(failed))
            except (ClientError, BotoCoreError) as exc:
                failures.append(f"ClientError: could not read s3://{spec.input_bucket}/{key}: {exc}")
        if stop.is_set():
            raise _Stopped()
        for out_key, body in outputs:
            s3.put_object(Bucket=spec.output_bucket, Key=out_key, Body=body, **spec.output_put_args)
        return failures


# ---------------------------------------------------------------------- one job's settings and steps


@dataclass
class _JobSpec:
    input_uri: str
    input_bucket: str
    input_prefix: str
    manifest: bool
    output_bucket: str
    output_prefix: str
    content_type: str | None
    accept: str | None
    split_type: str
    compression: str
    batch_strategy: str
    max_payload_bytes: int
    assemble_with: str
    input_filter: list[tuple[Any, ...]]
    output_filter: list[tuple[Any, ...]]
    join: bool
    timeout: float
    max_retries: int
    split_predictions: bool
    output_put_args: dict[str, str]

    @classmethod
    def from_job(cls, job: Any, split_predictions: bool) -> _JobSpec:
        transform_input = job.transform_input or {}
        source = (transform_input.get("DataSource") or {}).get("S3DataSource") or {}
        data_type = source.get("S3DataType", "S3Prefix")
        if data_type not in ("S3Prefix", "ManifestFile"):
            raise _ObjectFailed(
                f"ClientError: S3DataType {data_type} is not emulated locally (S3Prefix or ManifestFile only)."
            )
        split_type = transform_input.get("SplitType") or "None"
        if split_type not in ("Line", "None"):
            raise _ObjectFailed(f"ClientError: SplitType {split_type} is not emulated locally (Line or None).")
        compression = transform_input.get("CompressionType") or "None"
        input_uri = source.get("S3Uri", "")
        input_bucket, input_prefix = _parse_s3(input_uri, "TransformInput S3Uri")
        transform_output = job.transform_output or {}
        output_bucket, output_prefix = _parse_s3(transform_output.get("S3OutputPath", ""), "S3OutputPath")
        processing = job.data_processing or {}
        join = (processing.get("JoinSource") or "None") == "Input"
        content_type = transform_input.get("ContentType")
        if join and _media(content_type) not in ("text/csv", *_JSON_TYPES):
            raise _ObjectFailed(
                f"ClientError: JoinSource Input needs CSV or JSON input, not ContentType {content_type or '(none)'}."
            )
        max_mb = job.max_payload_in_mb
        client_config = job.model_client_config or {}
        put_args = {}
        if transform_output.get("KmsKeyId"):
            put_args = {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": transform_output["KmsKeyId"]}
        return cls(
            input_uri=input_uri,
            input_bucket=input_bucket,
            input_prefix=input_prefix,
            manifest=data_type == "ManifestFile",
            output_bucket=output_bucket,
            output_prefix=output_prefix,
            content_type=content_type,
            accept=transform_output.get("Accept"),
            split_type=split_type,
            compression=compression,
            batch_strategy=job.batch_strategy or "SingleRecord",
            max_payload_bytes=(DEFAULT_MAX_PAYLOAD_MB if max_mb is None else int(max_mb)) * 1024 * 1024,
            assemble_with=transform_output.get("AssembleWith") or "None",
            input_filter=_compile_path(processing.get("InputFilter") or "$", "InputFilter"),
            output_filter=_compile_path(processing.get("OutputFilter") or "$", "OutputFilter"),
            join=join,
            timeout=float(client_config.get("InvocationsTimeoutInSeconds") or DEFAULT_INVOCATION_TIMEOUT_SECONDS),
            max_retries=int(client_config.get("InvocationsMaxRetries", DEFAULT_INVOCATION_MAX_RETRIES)),
            split_predictions=split_predictions,
            output_put_args=put_args,
        )

    @property
    def csv_input(self) -> bool:
        return _media(self.content_type) == "text/csv"

    @property
    def csv_output(self) -> bool:
        return _media(self.accept) == "text/csv"

    def output_key(self, key: str) -> str:
        if key == self.input_prefix:
            relative = key.rsplit("/", 1)[-1]
        else:
            cut = self.input_prefix.rfind("/") + 1
            relative = key[cut:]
        prefix = self.output_prefix.rstrip("/")
        return f"{prefix}/{relative}.out" if prefix else f"{relative}.out"

    # -- one object
    def transform_object(self, data: bytes, url: str, where: str, stop: threading.Event) -> bytes:
        if self.compression == "Gzip":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as exc:
                raise _ObjectFailed(f"ClientError: {where} is not gzip data: {exc}") from None
        records = self._split(data)
        if not records:
            return b""
        model_inputs = [self._filter_input(record, where, number) for number, record in enumerate(records, 1)]
        separator = b"\n" if self.assemble_with == "Line" else b""
        out = io.BytesIO()
        for start, end in self._mini_batches(model_inputs, where):
            if stop.is_set():
                raise _Stopped()
            batch = model_inputs[start:end]
            payload = b"".join(r + b"\n" for r in batch) if self.split_type == "Line" else batch[0]
            body = _invoke(url, payload, self.content_type, self.accept, self.timeout, self.max_retries, where)
            per_record = self._per_record(body, len(batch)) if (self.assemble_with == "Line" or self.join) else None
            if per_record is None:
                if self.join:
                    raise _ObjectFailed(
                        f"ClientError: {where}: the model answered a mini-batch of {len(batch)} records (records "
                        f"{start + 1}-{end}) with output that does not split into one line per record; JoinSource "
                        "Input needs one output per input record."
                    )
                out.write(body + separator)
                continue
            for offset, output in enumerate(per_record):
                out.write(self._assemble(records[start + offset], output, where, start + offset + 1) + separator)
        return out.getvalue()

    def _split(self, data: bytes) -> list[bytes]:
        if self.split_type == "None":
            return [data] if data else []
        return [line.rstrip(b"\r") for line in data.split(b"\n") if line.strip()]

    def _mini_batches(self, records: list[bytes], where: str) -> Iterator[tuple[int, int]]:
        limit = self.max_payload_bytes
        for number, record in enumerate(records, 1):
            if limit and len(record) + 1 > limit:
                raise _ObjectFailed(
                    f"ClientError: {where}: record {number} is {len(record)} bytes, more than MaxPayloadInMB "
                    f"({limit // (1024 * 1024)} MB)."
                )
        if self.batch_strategy != "MultiRecord" or self.split_type != "Line":
            yield from ((i, i + 1) for i in range(len(records)))
            return
        start, size = 0, 0
        for index, record in enumerate(records):
            if index > start and limit and size + len(record) + 1 > limit:
                yield start, index
                start, size = index, 0
            size += len(record) + 1
        yield start, len(records)

    def _filter_input(self, record: bytes, where: str, number: int) -> bytes:
        if not self.input_filter:
            return record
        if self.csv_input:
            selected = _apply_path(_csv_fields(record), self.input_filter, "InputFilter", where, number)
            return _csv_line(selected if isinstance(selected, list) else [selected])
        selected = _apply_path(_json_record(record, where, number), self.input_filter, "InputFilter", where, number)
        return json.dumps(selected).encode()

    def _per_record(self, body: bytes, count: int) -> list[bytes] | None:
        if self.split_predictions:
            try:
                document = json.loads(body)
            except ValueError:
                document = None
            if isinstance(document, dict):
                predictions = document.get("predictions")
                if isinstance(predictions, list) and len(predictions) == count:
                    return [json.dumps(p).encode() for p in predictions]
        text = body[:-1] if body.endswith(b"\n") else body
        lines = [line.rstrip(b"\r") for line in text.split(b"\n")]
        if len(lines) == count:
            return lines
        if count == 1:
            return [text]
        return None

    def _assemble(self, record: bytes, output: bytes, where: str, number: int) -> bytes:
        if not self.join:
            if not self.output_filter:
                return output
            if self.csv_output:
                return _csv_line(
                    _as_row(_apply_path(_csv_fields(output), self.output_filter, "OutputFilter", where, number))
                )
            return json.dumps(
                _apply_path(_json_value(output), self.output_filter, "OutputFilter", where, number)
            ).encode()
        if self.csv_input:
            if self.csv_output:
                joined: Any = _csv_fields(record) + _csv_fields(output)
                return _csv_line(_as_row(_apply_path(joined, self.output_filter, "OutputFilter", where, number)))
            value = _json_value(output)
            joined = [_csv_value(field) for field in _csv_fields(record)]
            joined += value if isinstance(value, list) else [value]
        else:
            document = _json_record(record, where, number)
            value = _json_value(output)
            if isinstance(document, dict):
                joined = {**document, "SageMakerOutput": value}
            else:
                joined = {"SageMakerInput": document, "SageMakerOutput": value}
        return json.dumps(_apply_path(joined, self.output_filter, "OutputFilter", where, number)).encode()


# ---------------------------------------------------------------------- helpers


def _arn(kind: str, name: str, backend: Any) -> str:
    return sagemaker_models.arn_formatter(kind, name, backend.account_id, backend.region_name)


def _set_status(job: Any, status: str) -> None:
    job.transform_job_status = status
    job.last_modified_time = utcnow()


def _finish(job: Any, status: str, reason: str = "") -> None:
    # The reason first: whoever reads Failed reads its reason too.
    job.failure_reason = reason[:MAX_FAILURE_REASON] or None
    job.transform_end_time = utcnow()
    _set_status(job, status)


def _media(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def _parse_s3(uri: str, what: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise _ObjectFailed(f"ClientError: {what} {uri!r} is not an s3://bucket/prefix URI.")
    return parts.netloc, parts.path.lstrip("/")


def _list_objects(s3: Any, bucket: str, prefix: str) -> list[str]:
    try:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", []) if not item["Key"].endswith("/")]
    except ClientError as exc:
        raise _ObjectFailed(f"ClientError: could not list s3://{bucket}/{prefix}: {exc}") from None


def _read_manifest(s3: Any, bucket: str, key: str) -> tuple[str, str, list[str]]:
    """SageMaker's manifest: `[{"prefix": "s3://bucket/folder/"}, "relative/key", ...]`."""
    where = f"s3://{bucket}/{key}"
    try:
        document = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        raise _ObjectFailed(f"ClientError: could not read the manifest {where}: {exc}") from None
    except ValueError:
        raise _ObjectFailed(f"ClientError: the manifest {where} is not JSON.") from None
    if (
        not isinstance(document, list)
        or not document
        or not isinstance(document[0], dict)
        or not isinstance(document[0].get("prefix"), str)
        or not all(isinstance(entry, str) and entry for entry in document[1:])
    ):
        raise _ObjectFailed(
            f'ClientError: the manifest {where} is not [{{"prefix": "s3://bucket/prefix/"}}, "key", ...].'
        )
    prefix_bucket, prefix = _parse_s3(document[0]["prefix"], "manifest prefix")
    return prefix_bucket, prefix, [prefix + entry for entry in document[1:]]


def _invoke(
    url: str, payload: bytes, content_type: str | None, accept: str | None, timeout: float, retries: int, where: str
) -> bytes:
    parts = urllib.parse.urlsplit(url)
    headers = {"Content-Type": content_type} if content_type else {}
    if accept:
        headers["Accept"] = accept
    problem = ""
    for _ in range(retries + 1):
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port or 80, timeout=CONNECT_TIMEOUT_SECONDS)
        try:
            conn.connect()
            assert conn.sock is not None
            conn.sock.settimeout(timeout)
            conn.request("POST", parts.path.rstrip("/") + "/invocations", body=payload, headers=headers)
            response = conn.getresponse()
            body = response.read()
        except TimeoutError:
            problem = f"AlgorithmError: {where}: the model did not answer within {timeout:.0f} s."
            continue
        except (OSError, http.client.HTTPException) as exc:
            problem = f"AlgorithmError: {where}: the model process at {url} is not reachable: {exc}"
            continue
        finally:
            conn.close()
        if 200 <= response.status < 300:
            return body
        message = body[:_MAX_MODEL_MESSAGE].decode("utf-8", errors="replace")
        problem = (
            f"{'ClientError' if response.status < 500 else 'AlgorithmError'}: Bad HTTP status received from "
            f"algorithm: {response.status} {response.reason} while processing {where}; the model said: {message}"
        )
        if response.status < 500:
            break
    raise _ObjectFailed(problem)


# -- JSONPath: SageMaker's documented subset

_STEP = re.compile(r"\.(\*|[^.\[\]]+)|\[([^\]]*)\]")


def _compile_path(expression: str, what: str) -> list[tuple[Any, ...]]:
    expression = expression.strip()
    if not expression.startswith("$"):
        raise _ObjectFailed(f"ClientError: {what} {expression!r} must start with $.")
    steps: list[tuple[Any, ...]] = []
    position = 1
    while position < len(expression):
        match = _STEP.match(expression, position)
        if match is None:
            raise _ObjectFailed(f"ClientError: {what} {expression!r} is not a supported JSONPath.")
        position = match.end()
        name, bracket = match.group(1), match.group(2)
        if name is not None:
            steps.append(("wild",) if name == "*" else ("key", name))
            continue
        try:
            steps.append(_bracket(bracket.strip()))
        except ValueError:
            raise _ObjectFailed(f"ClientError: {what} {expression!r} is not a supported JSONPath.") from None
    return steps


def _bracket(inside: str) -> tuple[Any, ...]:
    if inside == "*":
        return ("wild",)
    if inside.startswith(("'", '"')):
        names = [part.strip().strip("'\"") for part in inside.split(",")]
        return ("key", names[0]) if len(names) == 1 else ("keys", names)
    if ":" in inside:
        start, _, end = inside.partition(":")
        return ("slice", int(start) if start.strip() else None, int(end) if end.strip() else None)
    indexes = [int(part) for part in inside.split(",")]
    return ("index", indexes[0]) if len(indexes) == 1 else ("indexes", indexes)


def _apply_path(value: Any, steps: list[tuple[Any, ...]], what: str, where: str, number: int) -> Any:
    try:
        for step in steps:
            kind = step[0]
            if kind == "key":
                value = value[step[1]]
            elif kind == "keys":
                value = {name: value[name] for name in step[1] if name in value}
            elif kind == "index":
                value = value[step[1]]
            elif kind == "indexes":
                value = [value[i] for i in step[1]]
            elif kind == "slice":
                start, end = step[1], step[2]
                stop = None if end is None or end == -1 else end + 1
                value = value[start:stop]
            else:
                value = list(value.values()) if isinstance(value, dict) else list(value)
    except (KeyError, IndexError, TypeError):
        raise _ObjectFailed(f"ClientError: {where}: {what} does not apply to record {number}.") from None
    return value


# -- CSV and JSON records


def _csv_fields(record: bytes) -> list[str]:
    rows = list(csv.reader([record.decode("utf-8", errors="replace")]))
    return rows[0] if rows else []


def _csv_line(values: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([json.dumps(v) if isinstance(v, dict | list) else v for v in values])
    return buffer.getvalue().encode()


def _as_row(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _csv_value(field: str) -> Any:
    text = field.strip()
    return json.loads(text) if _JSON_NUMBER.match(text) else field


def _json_record(record: bytes, where: str, number: int) -> Any:
    try:
        return json.loads(record)
    except ValueError:
        raise _ObjectFailed(f"ClientError: {where}: record {number} is not JSON.") from None


def _json_value(output: bytes) -> Any:
    try:
        return json.loads(output)
    except ValueError:
        return output.decode("utf-8", errors="replace")

"""SageMaker training, really run: training jobs created in the embedded moto execute as local processes under
SageMaker's training container contract.

moto records a training job and reports it Completed at once without running anything, and has no
StopTrainingJob. With `install_training_runner(resolve_image, aws_url)` (in the process that runs moto),
CreateTrainingJob still goes through moto, which records the job, but the job is then InProgress and a
background thread runs it; DescribeTrainingJob (and Step Functions' `aws-sdk:sagemaker:describeTrainingJob`
polling) shows what SageMaker would.

Accepted at creation, as SageMaker does: a job name already used is ResourceInUse (moto would overwrite the
job); managed spot training without MaxWaitTimeInSeconds, or with one below MaxRuntimeInSeconds, is a
ValidationException; so is a MetricDefinitions regex that does not compile. moto replaces the job's
MetricDefinitions with a sample of its own; the caller's are kept.

What a job does (TrainingJobStatus / SecondaryStatus, with SecondaryStatusTransitions as SageMaker lists them):

- InProgress / Starting: `resolve_image(TrainingImage)` gives the command that plays the image (None: Failed,
  "ClientError: Could not pull image ...");
- InProgress / Downloading: a fresh directory plays /opt/ml: every object under each channel's S3Prefix in
  the embedded S3 goes to `input/data/<channel>/` (the key after the prefix's last "/"), the hyperparameters
  to `input/config/hyperparameters.json` (with inputdataconfig.json and resourceconfig.json), and the
  objects under CheckpointConfig.S3Uri to the checkpoint directory (CheckpointConfig.LocalPath, default
  /opt/ml/checkpoints, under that root). An empty channel fails the job (ClientError), as on SageMaker;
- InProgress / Training: the command runs with the SageMaker toolkit's variables (SM_CHANNEL_<NAME>,
  SM_INPUT_CONFIG_DIR, SM_MODEL_DIR, SM_OUTPUT_DIR, SM_OUTPUT_DATA_DIR, TRAINING_JOB_NAME) and
  SLUICE_CHECKPOINT_DIR; its output (stdout and stderr) goes to `<state dir>/logs/<job name>.log`
  (`runner.log_path(name)`), and each line is matched against the MetricDefinitions. While it runs, the
  checkpoint directory is synced to CheckpointConfig.S3Uri whenever a file in it is new or changed
  (hidden files, such as an atomic writer's temporaries, are not), and once more at the end. SageMaker does
  not delete checkpoints from S3 that the trainer deleted locally, and neither does this;
- InProgress / Uploading, then Completed / Completed: the model directory, tarred, becomes
  `<S3OutputPath>/<job name>/output/model.tar.gz` (ModelArtifacts.S3ModelArtifacts) and output/data
  `.../output/output.tar.gz`, encrypted with OutputDataConfig.KmsKeyId when one is given (checkpoints too);
- Failed / Failed when the command exits non-zero: FailureReason "AlgorithmError: " and the failure file
  (`/opt/ml/output/failure`) the trainer wrote, else its exit code and last log line.

FinalMetricDataList holds the last value of each metric definition found in the log (group 1 of its regex,
as a number). TrainingTimeInSeconds and BillableTimeInSeconds are the wall seconds from TrainingStartTime (the
start of Training) to TrainingEndTime, rounded up; SageMaker bills managed spot for less, which the API
reports the same way.

Stops (SIGTERM to the process group, then SIGKILL after `stop_grace_seconds`, 120 as on SageMaker):

- StopTrainingJob (which moto lacks and this adds): Stopping / Stopping, then Stopped / Stopped;
- MaxRuntimeInSeconds (counted from TrainingStartTime): Stopped / MaxRuntimeExceeded, as SageMaker documents
  the MaxRuntimeExceeded secondary status under Stopped; MaxWaitTimeInSeconds (counted from creation, for
  spot jobs): Stopped / MaxWaitTimeExceeded. A stopped job's model directory is uploaded if the trainer wrote
  one in its grace period, as SageMaker does.

Spot interruption, injected (`interrupt_at_epoch=K`, local mode's SLUICE_LOCAL_SPOT_INTERRUPT_AT_EPOCH): the
first training job created for each CheckpointConfig.S3Uri with EnableManagedSpotTraining is reclaimed as soon
as its log says `checkpoint saved: epoch K`: the process is frozen (SIGSTOP), the checkpoint directory synced,
the process killed, and the job reported Failed / Interrupted with FailureReason "Spot interruption: ...",
the sluice contract for a reclaimed attempt. A job that never logs that line is not interrupted.

Not emulated: Pipe and FastFile input modes, manifest data sources, distributed training (one host,
"algo-1"), warm pools, the debugger and profiler, TensorBoard output, instance types and volumes.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import re
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from moto.core.responses import EmptyResult
from moto.core.utils import utcnow
from moto.sagemaker import models as sagemaker_models
from moto.sagemaker import responses as sagemaker_responses
from moto.sagemaker.exceptions import ResourceInUseException, ValidationError

from sluice_local.embedded_clients import embedded_s3

log = logging.getLogger("sluice_local.training")

ImageResolver = Callable[[str], Sequence[str] | None]

DEFAULT_STOP_GRACE_SECONDS = 120.0
DEFAULT_MAX_RUNTIME_SECONDS = 86400
MAX_FAILURE_REASON = 1024
# The line after which an injected spot interruption reclaims the job (the checkpoint contract's).
CHECKPOINT_LINE = re.compile(r"checkpoint saved: epoch ([0-9]+)")
CONTAINER_ROOT = PurePosixPath("/opt/ml")
DEFAULT_CHECKPOINT_PATH = "/opt/ml/checkpoints"
_POLL_SECONDS = 0.2
_TERMINAL = ("Completed", "Failed", "Stopped")
_MESSAGES = {
    "Starting": "Preparing the instances for training",
    "Downloading": "Downloading input data",
    "Training": "Training image download completed. Training in progress.",
    "Uploading": "Uploading generated training model",
    "Completed": "Training job completed",
    "Failed": "Training job failed",
    "Stopping": "Stopping the training job",
    "Stopped": "Training job stopped",
    "MaxRuntimeExceeded": "Training job stopped: it exceeded MaxRuntimeInSeconds",
    "MaxWaitTimeExceeded": "Training job stopped: it exceeded MaxWaitTimeInSeconds",
    "Interrupted": "The spot instance was interrupted",
}

_lock = threading.Lock()
_installed: TrainingRunner | None = None


class _JobFailed(Exception):
    """The job fails with this FailureReason (prefixed ClientError: or AlgorithmError:)."""


def install_training_runner(
    resolve_image: ImageResolver,
    aws_url: str,
    region: str = "us-east-1",
    *,
    interrupt_at_epoch: int | None = None,
    state_dir: Path | None = None,
    stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS,
) -> TrainingRunner:
    """Make training jobs created in this process's moto really run; `runner.uninstall()` undoes it.

    Logs go under `state_dir` (default: a temporary directory removed at uninstall)."""
    runner = TrainingRunner(
        resolve_image,
        aws_url,
        region,
        interrupt_at_epoch=interrupt_at_epoch,
        state_dir=state_dir,
        stop_grace_seconds=stop_grace_seconds,
    )
    runner.install()
    return runner


@dataclass
class _Job:
    """What the runner knows of one job beyond moto's record of it."""

    record: Any  # moto's FakeTrainingJob, whose attributes DescribeTrainingJob reports
    metric_definitions: list[tuple[str, re.Pattern[str]]]
    interrupt_at: int | None
    log_path: Path
    wake: threading.Event = field(default_factory=threading.Event)
    # "stop" (StopTrainingJob), "max_runtime", "max_wait", "interrupt" or "shutdown" (uninstall); first wins.
    end_reason: str | None = None
    process: subprocess.Popen[bytes] | None = None
    thread: threading.Thread | None = None
    metrics: dict[str, tuple[float, datetime]] = field(default_factory=dict)
    last_line: str = ""
    synced: dict[str, tuple[int, int]] = field(default_factory=dict)


@dataclass
class TrainingRunner:
    resolve_image: ImageResolver
    aws_url: str
    region: str = "us-east-1"
    interrupt_at_epoch: int | None = None
    state_dir: Path | None = None
    stop_grace_seconds: float = DEFAULT_STOP_GRACE_SECONDS
    _undo: list[Callable[[], None]] = field(default_factory=list, repr=False)
    _jobs: dict[tuple[str, str, str], _Job] = field(default_factory=dict, repr=False)
    _logs: dict[str, Path] = field(default_factory=dict, repr=False)
    # Status changes and stop requests, so a stop never lands on a job that just finished.
    _state_lock: threading.RLock = field(default_factory=threading.RLock, repr=False)
    _interrupted_uris: set[str] = field(default_factory=set, repr=False)
    _owned_state_dir: bool = field(default=False, repr=False)
    _s3: Any = field(default=None, repr=False)

    # ------------------------------------------------------------------ the moto patch
    def install(self) -> None:
        global _installed
        import moto as moto_package

        from sluice_local.emulator import PATCHED_MOTO

        if not moto_package.__version__.startswith(PATCHED_MOTO):
            # The patch relies on moto 5.2's FakeTrainingJob (its attributes, its MetricDefinitions swap).
            raise RuntimeError(
                f"sluice_local patches moto {PATCHED_MOTO}x's training jobs; "
                f"re-check it for moto {moto_package.__version__}"
            )
        with _lock:
            if _installed is not None:
                raise RuntimeError("a training runner is already installed in this process (moto is process-wide)")
            _installed = self
        if self.state_dir is None:
            self.state_dir = Path(tempfile.mkdtemp(prefix="sluice-training-"))
            self._owned_state_dir = True
        (self.state_dir / "logs").mkdir(parents=True, exist_ok=True)
        backend_class = sagemaker_models.SageMakerModelBackend
        response_class = sagemaker_responses.SageMakerResponse
        original_create = backend_class.create_training_job
        runner = self

        def create_training_job(backend: Any, training_job_name: str, **kwargs: Any) -> Any:
            if training_job_name in backend.training_jobs:
                arn = sagemaker_models.FakeTrainingJob.arn_formatter(
                    training_job_name, backend.account_id, backend.region_name
                )
                raise ResourceInUseException(
                    "Job name must be unique within an AWS account and region, and a job with this name "
                    f"already exists ({arn})"
                )
            spec = copy.deepcopy(kwargs.get("algorithm_specification") or {})
            definitions = _metric_definitions(spec.get("MetricDefinitions") or [])
            _check_stopping_condition(
                kwargs.get("stopping_condition") or {}, kwargs.get("enable_managed_spot_training")
            )
            record = original_create(backend, training_job_name=training_job_name, **kwargs)
            record.algorithm_specification = spec  # moto swaps in a sample MetricDefinitions of its own
            runner._start(backend, record, definitions)
            return record

        def stop_training_job(backend: Any, training_job_name: str) -> None:
            record = backend.training_jobs.get(training_job_name)
            if record is None:
                arn = sagemaker_models.FakeTrainingJob.arn_formatter(
                    training_job_name, backend.account_id, backend.region_name
                )
                raise ValidationError(f"Could not find training job '{arn}'.")
            runner._request_stop(backend, record)

        def stop_training_job_action(response: Any) -> EmptyResult:
            response.sagemaker_backend.stop_training_job(response._get_param("TrainingJobName"))
            return EmptyResult()

        backend_class.create_training_job = create_training_job
        backend_class.stop_training_job = stop_training_job
        response_class.stop_training_job = stop_training_job_action

        def undo() -> None:
            backend_class.create_training_job = original_create
            del backend_class.stop_training_job
            del response_class.stop_training_job

        self._undo.append(undo)

    def uninstall(self, timeout: float = 10.0) -> None:
        """Restore moto; running jobs are stopped (SIGTERM, SIGKILL after a few seconds) and awaited."""
        global _installed
        while self._undo:
            self._undo.pop()()
        with self._state_lock:
            running = list(self._jobs.values())
        for job in running:
            self._end(job, "shutdown")
        for job in running:
            if job.thread is not None:
                job.thread.join(timeout)
        if self._owned_state_dir and self.state_dir is not None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        with _lock:
            if _installed is self:
                _installed = None

    def log_path(self, training_job_name: str) -> Path | None:
        """The log (stdout and stderr) of the latest job of that name run here."""
        return self._logs.get(training_job_name)

    # ------------------------------------------------------------------ job lifecycle
    def _start(self, backend: Any, record: Any, definitions: list[tuple[str, re.Pattern[str]]]) -> None:
        name = record.training_job_name
        now = utcnow()
        record.training_job_status = "InProgress"
        record.secondary_status = "Starting"
        record.secondary_status_transitions = [
            {"Status": "Starting", "StartTime": now, "StatusMessage": _MESSAGES["Starting"]}
        ]
        # Known only once the job ends; None keeps them out of DescribeTrainingJob, as on SageMaker.
        for attribute in ("training_start_time", "training_end_time", "failure_reason", "model_artifacts"):
            setattr(record, attribute, None)
        record.final_metric_data_list = []
        record.training_time_in_seconds = None
        record.billable_time_in_seconds = None
        interrupt_at = None
        uri = _checkpoint_uri(record)
        if self.interrupt_at_epoch is not None and record.enable_managed_spot_training and uri:
            with self._state_lock:
                if uri not in self._interrupted_uris:
                    self._interrupted_uris.add(uri)
                    interrupt_at = self.interrupt_at_epoch
        assert self.state_dir is not None
        log_path = self.state_dir / "logs" / f"{name}.log"
        job = _Job(record=record, metric_definitions=definitions, interrupt_at=interrupt_at, log_path=log_path)
        self._logs[name] = log_path
        key = (backend.account_id, backend.region_name, name)
        job.thread = threading.Thread(target=self._run, args=(key, job), name=f"training-{name}", daemon=True)
        with self._state_lock:
            self._jobs[key] = job
        job.thread.start()

    def _request_stop(self, backend: Any, record: Any) -> None:
        with self._state_lock:
            if record.training_job_status in _TERMINAL:
                raise ValidationError(
                    f"The training job {record.training_job_name} is {record.training_job_status}; only a job in "
                    "progress can be stopped."
                )
            if record.training_job_status == "Stopping":
                return
            _transition(record, "Stopping", "Stopping")
            job = self._jobs.get((backend.account_id, backend.region_name, record.training_job_name))
        if job is not None:
            self._end(job, "stop")

    def _end(self, job: _Job, reason: str) -> None:
        with self._state_lock:
            if job.end_reason is None:
                job.end_reason = reason
        job.wake.set()

    def _run(self, key: tuple[str, str, str], job: _Job) -> None:
        record = job.record
        root = Path(tempfile.mkdtemp(prefix=f"sluice-training-{record.training_job_name}-"))
        try:
            try:
                self._execute(job, root)
            except _JobFailed as failed:
                self._finish(job, "Failed", "Failed", str(failed))
            except Exception as exc:
                log.exception("training job %s failed unexpectedly", record.training_job_name)
                self._finish(job, "Failed", "Failed", f"InternalServerError: the local training runner failed: {exc!r}")
        finally:
            _reap(job)
            shutil.rmtree(root, ignore_errors=True)
            with self._state_lock:
                self._jobs.pop(key, None)
        log.info(
            "training job %s: %s/%s %s",
            record.training_job_name,
            record.training_job_status,
            record.secondary_status,
            record.failure_reason or "",
        )

    def _execute(self, job: _Job, root: Path) -> None:
        record = job.record
        image = (record.algorithm_specification or {}).get("TrainingImage") or ""
        command = self.resolve_image(image)
        if not command:
            raise _JobFailed(
                f'ClientError: Could not pull image "{image}": local mode runs no such training image (it knows '
                "the images local mode registers, e.g. sluice/iris-trainer:local)."
            )
        if not self._advance(job, "Downloading"):
            return self._finish_stopped(job)
        layout = _Layout.create(root, record)
        for channel in record.input_data_config or []:
            self._download_channel(channel, layout.channel(channel["ChannelName"]))
        uri = _checkpoint_uri(record)
        if uri:
            self._download_prefix(uri + "/", layout.checkpoints, required=False)
            job.synced = _snapshot(layout.checkpoints)
        if not self._advance(job, "Training"):
            return self._finish_stopped(job)
        record.training_start_time = utcnow()
        exit_code = self._train(job, layout, list(command))
        self._sync_checkpoints(job, layout)
        reason = job.end_reason
        if reason == "interrupt":
            return self._finish(
                job,
                "Failed",
                "Interrupted",
                f"Spot interruption: the spot instance was reclaimed after the checkpoint of epoch {job.interrupt_at} "
                "(injected by local mode: SLUICE_LOCAL_SPOT_INTERRUPT_AT_EPOCH). Restart from the checkpoint.",
            )
        if reason is not None:
            self._upload_outputs(job, layout, only_if_present=True)
            return self._finish_stopped(job)
        if exit_code != 0:
            raise _JobFailed(_algorithm_error(layout, exit_code, job.last_line))
        if not self._advance(job, "Uploading"):
            return self._finish_stopped(job)
        self._upload_outputs(job, layout, only_if_present=False)
        self._finish(job, "Completed", "Completed")

    def _advance(self, job: _Job, secondary: str) -> bool:
        """Move on to the next InProgress step, unless the job is being stopped."""
        with self._state_lock:
            if job.end_reason is not None:
                return False
            _transition(job.record, "InProgress", secondary)
            return True

    def _train(self, job: _Job, layout: _Layout, command: list[str]) -> int:
        record = job.record
        with self._state_lock:
            if job.end_reason is not None:
                return -1
            with open(job.log_path, "ab") as log_file:
                log_file.write(f"=== training job {record.training_job_name}: {' '.join(command)}\n".encode())
            job.process = subprocess.Popen(  # noqa: S603 - the command local mode registered for the image
                command,
                cwd=layout.root,
                env={**os.environ, **layout.environment(record)},
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                # Its own process group: stops and reclaims reach whatever the trainer starts.
                start_new_session=True,
            )
        reader = threading.Thread(target=self._read_log, args=(job,), name=f"training-log-{record.training_job_name}")
        reader.start()
        process = job.process
        stopping_condition = record.stopping_condition or {}
        runtime_deadline = time.monotonic() + float(
            stopping_condition.get("MaxRuntimeInSeconds") or DEFAULT_MAX_RUNTIME_SECONDS
        )
        wait_limit = stopping_condition.get("MaxWaitTimeInSeconds") if record.enable_managed_spot_training else None
        waited = (utcnow() - record.creation_time).total_seconds()
        wait_deadline = time.monotonic() + float(wait_limit) - waited if wait_limit else math.inf
        signalled_at: float | None = None
        while not _exited(process):
            job.wake.wait(_POLL_SECONDS)
            job.wake.clear()
            self._sync_checkpoints(job, layout)
            now = time.monotonic()
            if job.end_reason is None and now >= wait_deadline:
                self._end(job, "max_wait")
            elif job.end_reason is None and now >= runtime_deadline:
                self._end(job, "max_runtime")
            reason = job.end_reason
            if reason == "interrupt":
                # Frozen by the log reader right after the checkpoint line: sync what it wrote, then reclaim.
                self._sync_checkpoints(job, layout)
                _signal(process, signal.SIGKILL)
                break
            if reason is not None and signalled_at is None:
                if reason in ("max_runtime", "max_wait"):
                    with self._state_lock:
                        _transition(record, "Stopping", "Stopping")
                _signal(process, signal.SIGTERM)
                signalled_at = now
            grace = self.stop_grace_seconds if reason != "shutdown" else min(self.stop_grace_seconds, 5.0)
            if signalled_at is not None and now - signalled_at >= grace:
                _signal(process, signal.SIGKILL)
        # Exited but not yet reaped, so its process group id is still its own: end what it left running.
        _signal(process, signal.SIGKILL)
        exit_code = process.wait()
        reader.join(10)
        return exit_code

    def _read_log(self, job: _Job) -> None:
        assert job.process is not None
        assert job.process.stdout is not None
        with open(job.log_path, "ab") as log_file:
            for raw in job.process.stdout:
                log_file.write(raw)
                log_file.flush()
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if line.strip():
                    job.last_line = line
                now = utcnow()
                for name, pattern in job.metric_definitions:
                    value = _metric_value(pattern, line)
                    if value is not None:
                        job.metrics[name] = (value, now)
                if job.interrupt_at is not None and job.end_reason is None:
                    match = CHECKPOINT_LINE.search(line)
                    if match and int(match.group(1)) == job.interrupt_at:
                        # Freeze it at once, so it trains no further than the checkpoint the reclaim follows.
                        _signal(job.process, signal.SIGSTOP)
                        self._end(job, "interrupt")

    def _finish_stopped(self, job: _Job) -> None:
        secondary = {"max_runtime": "MaxRuntimeExceeded", "max_wait": "MaxWaitTimeExceeded"}.get(
            job.end_reason or "", "Stopped"
        )
        self._finish(job, "Stopped", secondary)

    def _finish(self, job: _Job, status: str, secondary: str, reason: str = "") -> None:
        record = job.record
        end = utcnow()
        start = record.training_start_time or end
        seconds = max(0, math.ceil((end - start).total_seconds()))
        # Everything a reader of the final status needs is in place before the status itself.
        record.final_metric_data_list = [
            {"MetricName": name, "Value": job.metrics[name][0], "Timestamp": job.metrics[name][1]}
            for name, _ in job.metric_definitions
            if name in job.metrics
        ]
        record.failure_reason = reason[:MAX_FAILURE_REASON] or None
        record.training_start_time = start
        record.training_end_time = end
        record.training_time_in_seconds = seconds
        record.billable_time_in_seconds = seconds
        with self._state_lock:
            _transition(record, status, secondary, reason)

    # ------------------------------------------------------------------ S3
    def _client(self) -> Any:
        if self._s3 is None:
            self._s3 = embedded_s3(self.aws_url, self.region)
        return self._s3

    def _download_channel(self, channel: dict[str, Any], target: Path) -> None:
        source = (channel.get("DataSource") or {}).get("S3DataSource") or {}
        data_type = source.get("S3DataType", "S3Prefix")
        if data_type != "S3Prefix":
            raise _JobFailed(
                f"ClientError: channel {channel['ChannelName']}: S3DataType {data_type} is not emulated locally "
                "(S3Prefix only)."
            )
        self._download_prefix(source.get("S3Uri") or "", target, required=True)

    def _download_prefix(self, uri: str, target: Path, *, required: bool) -> None:
        bucket, prefix = _parse_s3(uri)
        s3 = self._client()
        try:
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            keys = [item["Key"] for page in pages for item in page.get("Contents", []) if not item["Key"].endswith("/")]
        except (ClientError, BotoCoreError) as exc:
            raise _JobFailed(f"ClientError: could not list {uri}: {exc}") from None
        if not keys and required:
            raise _JobFailed(
                f'ClientError: No S3 objects found under S3 URL "{uri}" given in input data source. Please ensure '
                f"that the bucket exists in the selected region ({self.region}) and that objects exist under that "
                "S3 prefix."
            )
        cut = prefix.rfind("/") + 1
        for key in keys:
            relative = PurePosixPath(key[cut:])
            if relative.is_absolute() or ".." in relative.parts:
                raise _JobFailed(f"ClientError: s3://{bucket}/{key} would be written outside {target}.")
            path = target.joinpath(*relative.parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                s3.download_file(bucket, key, str(path))
            except (ClientError, BotoCoreError) as exc:
                raise _JobFailed(f"ClientError: could not download s3://{bucket}/{key}: {exc}") from None

    def _sync_checkpoints(self, job: _Job, layout: _Layout) -> None:
        uri = _checkpoint_uri(job.record)
        if not uri:
            return
        bucket, prefix = _parse_s3(uri + "/")
        current = _snapshot(layout.checkpoints)
        for relative, signature in current.items():
            if job.synced.get(relative) == signature:
                continue
            try:
                self._client().upload_file(
                    str(layout.checkpoints / relative),
                    bucket,
                    prefix + relative,
                    ExtraArgs=_encryption(job.record),
                )
            except FileNotFoundError:
                continue  # the trainer pruned it meanwhile
            except (ClientError, BotoCoreError) as exc:
                log.warning(
                    "training job %s: checkpoint %s not synced: %s", job.record.training_job_name, relative, exc
                )
                continue
            job.synced[relative] = signature

    def _upload_outputs(self, job: _Job, layout: _Layout, *, only_if_present: bool) -> None:
        record = job.record
        output_path = (record.output_data_config or {}).get("S3OutputPath") or ""
        bucket, prefix = _parse_s3(output_path.rstrip("/") + "/")
        base = f"{prefix}{record.training_job_name}/output/"
        model_files = _files(layout.model)
        if model_files or not only_if_present:
            key = base + "model.tar.gz"
            self._put(record, bucket, key, _tar(layout.model, model_files))
            record.model_artifacts = {"S3ModelArtifacts": f"s3://{bucket}/{key}"}
        data_files = _files(layout.output_data)
        if data_files:
            self._put(record, bucket, base + "output.tar.gz", _tar(layout.output_data, data_files))

    def _put(self, record: Any, bucket: str, key: str, body: bytes) -> None:
        try:
            self._client().put_object(Bucket=bucket, Key=key, Body=body, **_encryption(record))
        except (ClientError, BotoCoreError) as exc:
            raise _JobFailed(f"ClientError: could not upload s3://{bucket}/{key}: {exc}") from None


# ---------------------------------------------------------------------- one job's /opt/ml


@dataclass
class _Layout:
    root: Path
    checkpoints: Path

    @classmethod
    def create(cls, root: Path, record: Any) -> _Layout:
        local_path = PurePosixPath((record.checkpoint_config or {}).get("LocalPath") or DEFAULT_CHECKPOINT_PATH)
        # The container's absolute paths, re-rooted in this job's directory.
        try:
            relative = local_path.relative_to(CONTAINER_ROOT)
        except ValueError:
            relative = PurePosixPath(*local_path.parts[1:]) if local_path.is_absolute() else local_path
        layout = cls(root=root, checkpoints=root.joinpath(*relative.parts))
        for directory in (layout.config, layout.model, layout.output_data, layout.checkpoints):
            directory.mkdir(parents=True, exist_ok=True)
        channels = record.input_data_config or []
        (layout.config / "hyperparameters.json").write_text(json.dumps(record.hyper_parameters or {}))
        (layout.config / "inputdataconfig.json").write_text(
            json.dumps({c["ChannelName"]: {k: v for k, v in c.items() if k != "DataSource"} for c in channels})
        )
        (layout.config / "resourceconfig.json").write_text(
            json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo"})
        )
        for channel in channels:
            layout.channel(channel["ChannelName"]).mkdir(parents=True, exist_ok=True)
        return layout

    @property
    def config(self) -> Path:
        return self.root / "input" / "config"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def output_data(self) -> Path:
        return self.output / "data"

    def channel(self, name: str) -> Path:
        if not re.fullmatch(r"[A-Za-z0-9\.\-_]+", name) or name in (".", ".."):
            raise _JobFailed(f"ClientError: channel name {name!r} is not valid.")
        return self.root / "input" / "data" / name

    def environment(self, record: Any) -> dict[str, str]:
        env = {
            "SM_INPUT_DIR": str(self.root / "input"),
            "SM_INPUT_CONFIG_DIR": str(self.config),
            "SM_MODEL_DIR": str(self.model),
            "SM_OUTPUT_DIR": str(self.output),
            "SM_OUTPUT_DATA_DIR": str(self.output_data),
            "SM_CHANNELS": json.dumps([c["ChannelName"] for c in record.input_data_config or []]),
            "SM_HPS": json.dumps(record.hyper_parameters or {}),
            "SM_CURRENT_HOST": "algo-1",
            "SLUICE_CHECKPOINT_DIR": str(self.checkpoints),
            "TRAINING_JOB_NAME": record.training_job_name,
            "TRAINING_JOB_ARN": record.arn,
            "PYTHONUNBUFFERED": "1",
        }
        for channel in record.input_data_config or []:
            env[f"SM_CHANNEL_{channel['ChannelName'].upper()}"] = str(self.channel(channel["ChannelName"]))
        return env


# ---------------------------------------------------------------------- helpers


def _metric_definitions(definitions: list[dict[str, str]]) -> list[tuple[str, re.Pattern[str]]]:
    compiled = []
    for definition in definitions:
        try:
            compiled.append((definition["Name"], re.compile(definition["Regex"])))
        except (KeyError, re.error) as exc:
            raise ValidationError(f"Invalid MetricDefinitions entry {definition!r}: {exc}") from None
    return compiled


def _check_stopping_condition(condition: dict[str, Any], spot: Any) -> None:
    runtime = condition.get("MaxRuntimeInSeconds")
    wait = condition.get("MaxWaitTimeInSeconds")
    if spot and wait is None:
        raise ValidationError("Invalid MaxWaitTimeInSeconds. It is required for managed spot training.")
    if wait is not None and runtime is not None and int(wait) < int(runtime):
        raise ValidationError(
            f"Invalid MaxWaitTimeInSeconds ({wait}). It must be greater than or equal to MaxRuntimeInSeconds "
            f"({runtime})."
        )


def _checkpoint_uri(record: Any) -> str:
    return ((record.checkpoint_config or {}).get("S3Uri") or "").rstrip("/")


def _transition(record: Any, status: str, secondary: str, reason: str = "") -> None:
    now = utcnow()
    transitions = [dict(t) for t in record.secondary_status_transitions or []]
    if not transitions or transitions[-1]["Status"] != secondary:
        if transitions and "EndTime" not in transitions[-1]:
            transitions[-1]["EndTime"] = now
        message = _MESSAGES.get(secondary, secondary)
        if secondary == "Failed" and reason:
            message = f"{message}. Reason: {reason[:500]}"
        entry = {"Status": secondary, "StartTime": now, "StatusMessage": message}
        if status in _TERMINAL:
            entry["EndTime"] = now
        transitions.append(entry)
    # Replaced, never mutated: DescribeTrainingJob may be serialising the old list right now.
    record.secondary_status_transitions = transitions
    record.secondary_status = secondary
    record.training_job_status = status
    record.last_modified_time = now


def _metric_value(pattern: re.Pattern[str], line: str) -> float | None:
    match = pattern.search(line)
    if match is None:
        return None
    try:
        value = float(match.group(1) if pattern.groups else match.group(0))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _algorithm_error(layout: _Layout, exit_code: int, last_line: str) -> str:
    failure = layout.output / "failure"
    try:
        message = failure.read_text(errors="replace").strip()
    except OSError:
        message = ""
    if not message:
        how = f"killed by {signal.Signals(-exit_code).name}" if exit_code < 0 else f"exit code {exit_code}"
        message = f"the training process ended with {how} and wrote no failure file; last log line: {last_line!r}"
    return message if message.startswith("AlgorithmError:") else f"AlgorithmError: {message}"


def _exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the process has exited, without reaping it (Popen.poll would), so its group can still be signalled."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal(process: subprocess.Popen[bytes], signum: int) -> None:
    """Signal the trainer's process group (the trainer and whatever it started), until the trainer is reaped."""
    if process.returncode is not None:
        return  # reaped: its id may belong to someone else by now
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _reap(job: _Job) -> None:
    """No process of a finished job lives on (or stays a zombie)."""
    process = job.process
    if process is None:
        return
    _signal(process, signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()


def _snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    snapshot = {}
    for path in _files(directory):
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        snapshot[path.relative_to(directory).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return snapshot


def _files(directory: Path) -> list[Path]:
    if not directory.is_dir():
        return []
    return sorted(
        p
        for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def _tar(directory: Path, files: list[Path]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in files:
            tar.add(path, arcname=path.relative_to(directory).as_posix(), recursive=False)
    return buffer.getvalue()


def _encryption(record: Any) -> dict[str, str]:
    key = (record.output_data_config or {}).get("KmsKeyId")
    return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": key} if key else {}


def _parse_s3(uri: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise _JobFailed(f"ClientError: {uri!r} is not an s3://bucket/prefix URI.")
    return parts.netloc, parts.path.lstrip("/")

"""The one settings object: every tunable comes from an environment variable set in template.yaml.

Defaults mirror ../shared/DOMAIN.md; a platform team changes them through stack parameters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cache


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def _flag(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in {"1", "true", "yes", "on"}


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    catalog_parameter: str = field(default_factory=lambda: _env("SLUICE_CATALOG_PARAMETER", "/sluice/catalog"))
    # Seconds a loaded catalog is trusted before SSM is asked again (no per-request reads).
    catalog_ttl_seconds: int = field(default_factory=lambda: int(_env("SLUICE_CATALOG_TTL_SECONDS", "300")))
    api_keys_table: str = field(default_factory=lambda: _env("SLUICE_API_KEYS_TABLE", "sluice-api-keys"))
    # Debug only: when on, request and response bodies are logged.
    log_bodies: bool = field(default_factory=lambda: _flag("SLUICE_LOG_BODIES", False))
    # Input tokens are estimated before the call (no tokenizer in Lambda) as ceil(chars / this).
    chars_per_token: float = field(default_factory=lambda: float(_env("SLUICE_CHARS_PER_TOKEN", "4")))
    # Retry-After sent with a 429 when the backend throttles.
    throttle_retry_after_seconds: int = field(
        default_factory=lambda: int(_env("SLUICE_THROTTLE_RETRY_AFTER_SECONDS", "2"))
    )
    # Defaults for catalog entries that leave a limit out.
    default_max_payload_bytes: int = field(
        default_factory=lambda: int(_env("SLUICE_DEFAULT_MAX_PAYLOAD_BYTES", str(6 * 1024 * 1024)))
    )
    default_timeout_seconds: float = field(default_factory=lambda: float(_env("SLUICE_DEFAULT_TIMEOUT_SECONDS", "25")))
    connect_timeout_seconds: float = field(default_factory=lambda: float(_env("SLUICE_CONNECT_TIMEOUT_SECONDS", "2")))
    # Attempts per backend call, first one included: 2 absorbs a transient throttle without eating
    # API Gateway's 29 s budget.
    backend_max_attempts: int = field(default_factory=lambda: int(_env("SLUICE_BACKEND_MAX_ATTEMPTS", "2")))
    # IAM principals (role ARNs after a session is mapped to its role; fnmatch wildcards) that are
    # operators on the IAM API (stack parameter OperatorPrincipals). Empty: no IAM caller is an operator.
    operator_principals: tuple[str, ...] = field(default_factory=lambda: _list(_env("SLUICE_OPERATOR_PRINCIPALS", "")))
    metrics_namespace: str = field(default_factory=lambda: _env("POWERTOOLS_METRICS_NAMESPACE", "Sluice"))

    # ---- jobs (async inference, batch transform)
    jobs_table: str = field(default_factory=lambda: _env("SLUICE_JOBS_TABLE", "sluice-jobs"))
    idempotency_table: str = field(default_factory=lambda: _env("SLUICE_IDEMPOTENCY_TABLE", "sluice-idempotency"))
    data_bucket: str = field(default_factory=lambda: _env("SLUICE_DATA_BUCKET", "sluice-data"))
    async_state_machine_arn: str = field(default_factory=lambda: _env("SLUICE_ASYNC_STATE_MACHINE_ARN", ""))
    batch_state_machine_arn: str = field(default_factory=lambda: _env("SLUICE_BATCH_STATE_MACHINE_ARN", ""))
    # Completion events of every job (SNS); a caller's own callback is extra.
    job_events_topic_arn: str = field(default_factory=lambda: _env("SLUICE_JOB_EVENTS_TOPIC_ARN", ""))
    # SSM path under which each caller's webhook signing secret lives (SecureString per caller, named
    # by the digest of the identity): one tenant's secret never signs another tenant's webhooks.
    webhook_secrets_path: str = field(default_factory=lambda: _env("SLUICE_WEBHOOK_SECRETS_PATH", ""))
    # Receivers refuse a webhook whose X-Sluice-Timestamp is further than this from their clock (replays).
    webhook_replay_window_seconds: int = field(
        default_factory=lambda: int(_env("SLUICE_WEBHOOK_REPLAY_WINDOW_SECONDS", "300"))
    )
    # SSM parameter (JSON) naming, per caller, the SNS topics its job callbacks may publish to.
    callback_topics_parameter: str = field(default_factory=lambda: _env("SLUICE_CALLBACK_TOPICS_PARAMETER", ""))
    # How long a function trusts that document (an edit applies within this; never read per request).
    callback_topics_ttl_seconds: int = field(
        default_factory=lambda: int(_env("SLUICE_CALLBACK_TOPICS_TTL_SECONDS", "300"))
    )
    job_ttl_days: int = field(default_factory=lambda: int(_env("SLUICE_JOB_TTL_DAYS", "30")))
    # The announcer's scheduled backlog run: final jobs still unannounced this long after they finished
    # (their stream record ran out of retries and sits in the DLQ) are announced again, at most this many.
    announcer_backlog_after_seconds: int = field(
        default_factory=lambda: int(_env("SLUICE_ANNOUNCER_BACKLOG_AFTER_SECONDS", "1800"))
    )
    announcer_backlog_max_jobs: int = field(
        default_factory=lambda: int(_env("SLUICE_ANNOUNCER_BACKLOG_MAX_JOBS", "100"))
    )
    # How long one announcer holds a job's announcement (sluice.jobs.announcement_marks) before another
    # may take it over: longer than the announcer function's timeout.
    announcement_lease_seconds: int = field(
        default_factory=lambda: int(_env("SLUICE_ANNOUNCEMENT_LEASE_SECONDS", "120"))
    )
    presigned_url_seconds: int = field(default_factory=lambda: int(_env("SLUICE_PRESIGNED_URL_SECONDS", "3600")))
    # Inline async bodies are capped by API Gateway (10 MB); larger inputs go through an upload URL.
    async_max_inline_bytes: int = field(
        default_factory=lambda: int(_env("SLUICE_ASYNC_MAX_INLINE_BYTES", str(6 * 1024 * 1024)))
    )
    async_max_upload_bytes: int = field(
        default_factory=lambda: int(_env("SLUICE_ASYNC_MAX_UPLOAD_BYTES", str(1024 * 1024 * 1024)))
    )
    # Each open upload ticket is a presigned PUT of up to async_max_upload_bytes: without a cap one
    # caller could hold unlimited storage promises. One more than this is a 429.
    async_max_open_uploads: int = field(default_factory=lambda: int(_env("SLUICE_ASYNC_MAX_OPEN_UPLOADS", "20")))
    # Where open tickets are counted (sluice.jobs.kinds.async_inference.upload_tickets).
    upload_tickets_table: str = field(
        default_factory=lambda: _env("SLUICE_UPLOAD_TICKETS_TABLE", "sluice-upload-tickets")
    )
    # Batch instance approval: these types need no approval; any other needs an approved_by field.
    batch_unapproved_instance_types: tuple[str, ...] = field(
        default_factory=lambda: tuple(
            t.strip()
            for t in _env(
                "SLUICE_BATCH_UNAPPROVED_INSTANCE_TYPES",
                "ml.m5.large,ml.m5.xlarge,ml.c5.large,ml.c5.xlarge,ml.g4dn.xlarge",
            ).split(",")
            if t.strip()
        )
    )
    # The ceiling on callers' SNS callback topics (fnmatch patterns over topic ARNs; the same patterns
    # scope the notifier's IAM policy); each caller's own list narrows it. Empty: SNS callbacks refused.
    callback_topic_arn_patterns: tuple[str, ...] = field(
        default_factory=lambda: tuple(
            p.strip() for p in _env("SLUICE_CALLBACK_TOPIC_ARN_PATTERNS", "").split(",") if p.strip()
        )
    )
    webhook_timeout_seconds: float = field(default_factory=lambda: float(_env("SLUICE_WEBHOOK_TIMEOUT_SECONDS", "5")))
    # How long a function trusts a caller's webhook secret read from SSM (a rotated one is used within this).
    webhook_secret_ttl_seconds: int = field(
        default_factory=lambda: int(_env("SLUICE_WEBHOOK_SECRET_TTL_SECONDS", "300"))
    )
    # Webhooks to private, loopback or link-local addresses are refused unless this is on (local use only).
    webhook_allow_private_hosts: bool = field(
        default_factory=lambda: _flag("SLUICE_WEBHOOK_ALLOW_PRIVATE_HOSTS", False)
    )
    batch_content_types: tuple[str, ...] = field(
        default_factory=lambda: tuple(
            t.strip()
            for t in _env("SLUICE_BATCH_CONTENT_TYPES", "text/csv,application/jsonlines").split(",")
            if t.strip()
        )
    )
    # How long an Idempotency-Key is remembered: a retry within this window returns the first job.
    idempotency_seconds: int = field(default_factory=lambda: int(_env("SLUICE_IDEMPOTENCY_SECONDS", "86400")))
    # Buckets besides the data bucket a batch job may read from and write to (any caller, any prefix).
    # In the data bucket a caller only reaches its own prefixes.
    batch_extra_buckets: tuple[str, ...] = field(default_factory=lambda: _list(_env("SLUICE_BATCH_EXTRA_BUCKETS", "")))
    batch_default_instance_type: str = field(
        default_factory=lambda: _env("SLUICE_BATCH_DEFAULT_INSTANCE_TYPE", "ml.m5.large")
    )
    batch_max_instance_count: int = field(default_factory=lambda: int(_env("SLUICE_BATCH_MAX_INSTANCE_COUNT", "10")))
    # Owner of the jobs started by files dropped under batch-input/<model>/ (write access to that
    # prefix is the authorisation; the caller named here sees the jobs in GET /v1/jobs).
    batch_drop_caller: str = field(default_factory=lambda: _env("SLUICE_BATCH_DROP_CALLER", "platform"))
    # Approvals (sluice.approvals): pending requests, decided by operators.
    approvals_table: str = field(default_factory=lambda: _env("SLUICE_APPROVALS_TABLE", "sluice-approvals"))
    # How long a request waits for an operator before its job fails with "approval timed out"
    # (stack parameter ApprovalTimeoutHours; fractions of an hour let tests wait seconds).
    approval_timeout_hours: float = field(default_factory=lambda: float(_env("SLUICE_APPROVAL_TIMEOUT_HOURS", "24")))
    # GET /v1/jobs/{id} of a finished batch job presigns at most this many output files.
    batch_output_urls_max: int = field(default_factory=lambda: int(_env("SLUICE_BATCH_OUTPUT_URLS_MAX", "50")))

    # ---- training (sluice.jobs.kinds.training)
    training_state_machine_arn: str = field(default_factory=lambda: _env("SLUICE_TRAINING_STATE_MACHINE_ARN", ""))
    # The execution role SageMaker training jobs run as (the stack's SageMakerTrainingRole).
    training_role_arn: str = field(default_factory=lambda: _env("SLUICE_TRAINING_ROLE_ARN", ""))
    # The most attempts a run may ask for (max_attempts above it is a 422).
    training_max_attempts: int = field(default_factory=lambda: int(_env("SLUICE_TRAINING_MAX_ATTEMPTS", "5")))
    # The most max_runtime_seconds a run may ask for (SageMaker's own ceiling is 28 days).
    training_max_runtime_seconds: int = field(
        default_factory=lambda: int(_env("SLUICE_TRAINING_MAX_RUNTIME_SECONDS", "86400"))
    )
    training_max_instance_count: int = field(
        default_factory=lambda: int(_env("SLUICE_TRAINING_MAX_INSTANCE_COUNT", "4"))
    )
    # A run stops retrying once its attempts together billed this many seconds.
    training_billable_seconds_budget: int = field(
        default_factory=lambda: int(_env("SLUICE_TRAINING_BILLABLE_SECONDS_BUDGET", "86400"))
    )
    # After this many spot failures (interruptions, capacity shortages) a run goes on on-demand.
    training_spot_failures_before_on_demand: int = field(
        default_factory=lambda: int(_env("SLUICE_TRAINING_SPOT_FAILURES_BEFORE_ON_DEMAND", "2"))
    )
    # An attempt that started below the run's checkpoint watermark: "fail" the run, or only "warn".
    training_from_zero_restart: str = field(default_factory=lambda: _env("SLUICE_TRAINING_FROM_ZERO_RESTART", "fail"))

    # ---- deployments (sluice.jobs.kinds.deployment); defaults from the domain brief
    deployment_state_machine_arn: str = field(default_factory=lambda: _env("SLUICE_DEPLOYMENT_STATE_MACHINE_ARN", ""))
    # One deployment per endpoint at a time: who holds each endpoint.
    deployment_locks_table: str = field(
        default_factory=lambda: _env("SLUICE_DEPLOYMENT_LOCKS_TABLE", "sluice-deployment-locks")
    )
    # The role a Model created from a registry version runs as.
    deployment_model_role_arn: str = field(default_factory=lambda: _env("SLUICE_DEPLOYMENT_MODEL_ROLE_ARN", ""))
    deployment_canary_steps: tuple[float, ...] = field(
        default_factory=lambda: tuple(float(v) for v in _list(_env("SLUICE_DEPLOYMENT_CANARY_STEPS", "5,25,100")))
    )
    deployment_linear_step_percent: float = field(
        default_factory=lambda: float(_env("SLUICE_DEPLOYMENT_LINEAR_STEP_PERCENT", "25"))
    )
    deployment_ab_split_percent: float = field(
        default_factory=lambda: float(_env("SLUICE_DEPLOYMENT_AB_SPLIT_PERCENT", "50"))
    )
    deployment_bake_seconds: int = field(default_factory=lambda: int(_env("SLUICE_DEPLOYMENT_BAKE_SECONDS", "300")))
    guard_error_rate_percent: float = field(default_factory=lambda: float(_env("SLUICE_GUARD_ERROR_RATE_PERCENT", "1")))
    guard_p99_latency_ms: float = field(default_factory=lambda: float(_env("SLUICE_GUARD_P99_LATENCY_MS", "2000")))
    guard_low_confidence_percent: float = field(
        default_factory=lambda: float(_env("SLUICE_GUARD_LOW_CONFIDENCE_PERCENT", "5"))
    )
    guard_min_invocations: int = field(default_factory=lambda: int(_env("SLUICE_GUARD_MIN_INVOCATIONS", "50")))
    guard_consecutive_breaches: int = field(default_factory=lambda: int(_env("SLUICE_GUARD_CONSECUTIVE_BREACHES", "2")))
    autoscaling_min: int = field(default_factory=lambda: int(_env("SLUICE_AUTOSCALING_MIN", "1")))
    autoscaling_max: int = field(default_factory=lambda: int(_env("SLUICE_AUTOSCALING_MAX", "4")))
    autoscaling_target_invocations: float = field(
        default_factory=lambda: float(_env("SLUICE_AUTOSCALING_TARGET_INVOCATIONS", "500"))
    )
    autoscaling_scale_in_cooldown: int = field(
        default_factory=lambda: int(_env("SLUICE_AUTOSCALING_SCALE_IN_COOLDOWN", "300"))
    )
    autoscaling_scale_out_cooldown: int = field(
        default_factory=lambda: int(_env("SLUICE_AUTOSCALING_SCALE_OUT_COOLDOWN", "60"))
    )
    # An answer whose confidence is below this counts as low-confidence (catalog entries' `confidence`).
    confidence_threshold: float = field(default_factory=lambda: float(_env("SLUICE_CONFIDENCE_THRESHOLD", "0.7")))

    # ---- the reaper (sluice.jobs.reaper): limits in minutes without a change, per status and kind
    # QUEUED with no execution this long: a submission that crashed before starting its job.
    reaper_queued_limit_minutes: float = field(
        default_factory=lambda: float(_env("SLUICE_REAPER_QUEUED_LIMIT_MINUTES", "30"))
    )
    # AWAITING_APPROVAL: the approval wait (approval_timeout_hours) plus this.
    reaper_approval_margin_minutes: float = field(
        default_factory=lambda: float(_env("SLUICE_REAPER_APPROVAL_MARGIN_MINUTES", "30"))
    )
    reaper_async_running_limit_minutes: float = field(
        default_factory=lambda: float(_env("SLUICE_REAPER_ASYNC_RUNNING_LIMIT_MINUTES", "30"))
    )
    # A SageMaker async endpoint's job with neither its output nor its failure object this long after it
    # started is failed (SageMaker may queue a request for hours: RequestTTL up to 6 h).
    reaper_async_endpoint_limit_minutes: float = field(
        default_factory=lambda: float(_env("SLUICE_REAPER_ASYNC_ENDPOINT_LIMIT_MINUTES", "480"))
    )
    reaper_batch_running_limit_minutes: float = field(
        default_factory=lambda: float(_env("SLUICE_REAPER_BATCH_RUNNING_LIMIT_MINUTES", "60"))
    )
    # Jobs one run looks at, oldest first; the rest wait for the next run.
    reaper_max_jobs_per_run: int = field(default_factory=lambda: int(_env("SLUICE_REAPER_MAX_JOBS_PER_RUN", "100")))


def approval_timeout_seconds(settings: Settings) -> int:
    """The approval wait in whole seconds (Step Functions' unit), at least one."""
    return max(1, round(settings.approval_timeout_hours * 3600))


@cache
def get_settings() -> Settings:
    return Settings()

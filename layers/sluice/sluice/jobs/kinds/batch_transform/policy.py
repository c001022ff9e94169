"""Batch transform decisions: does this instance type need an operator's approval, and is a failed
transform job worth retrying?

Both are pure functions of their input and the settings, so the state machine's Choice states act
on a decision that is logged and unit-testable. The approval itself is an operator's (sluice.approvals).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Literal

from pydantic import BaseModel

from sluice.jobs.kinds.batch_transform.models import BatchExecutionInput
from sluice.jobs.status import MAX_REASON_CHARS
from sluice.storage.keys import s3_uri


class InstanceApproval(BaseModel):
    needs_approval: bool
    reason: str
    instance_type: str
    instance_count: int


def needs_approval(instance_type: str, without_approval: tuple[str, ...]) -> bool:
    return instance_type not in without_approval


def instance_approval(instance_type: str, instance_count: int, without_approval: tuple[str, ...]) -> InstanceApproval:
    """Types in `without_approval` (settings.batch_unapproved_instance_types) run as asked; any other
    type (larger than ml.g4dn.xlarge by default) waits for an operator's approval. Nothing the caller
    sends can change this: the caller is not the approver."""
    facts: dict[str, Any] = {"instance_type": instance_type, "instance_count": instance_count}
    if not needs_approval(instance_type, without_approval):
        return InstanceApproval(needs_approval=False, reason=f"{instance_type} needs no approval.", **facts)
    allowed = ", ".join(without_approval) or "none"
    return InstanceApproval(
        needs_approval=True,
        reason=(
            f"{instance_count} x {instance_type} needs an operator's approval (only {allowed} run without one); "
            "the job waits for it (AWAITING_APPROVAL)."
        ),
        **facts,
    )


Category = Literal["throttling", "capacity", "internal", "quota", "client"]
TRANSIENT: frozenset[str] = frozenset({"throttling", "capacity", "internal"})


class FailureClassification(BaseModel):
    transient: bool
    category: Category
    # Shown to the caller as the job's failure reason: SageMaker's own words, plus what to do for quotas.
    reason: str


# SageMaker starts a FailureReason with its category ("ClientError: ...", "CapacityError: ...").
_PREFIXES: tuple[tuple[str, Category], ...] = (
    ("ClientError", "client"),
    ("AlgorithmError", "client"),
    ("CapacityError", "capacity"),
    ("InsufficientCapacity", "capacity"),
    ("InternalServerError", "internal"),
    ("InternalFailure", "internal"),
    ("ThrottlingException", "throttling"),
    ("ResourceLimitExceeded", "quota"),
)
_KEYWORDS: tuple[tuple[re.Pattern[str], Category], ...] = (
    (re.compile(r"throttl|rate exceeded|too many requests|slow ?down", re.IGNORECASE), "throttling"),
    (re.compile(r"insufficient\s*capacity|capacity error|unable to provision", re.IGNORECASE), "capacity"),
    (re.compile(r"resource ?limit ?exceeded|service quota|account-level service limit", re.IGNORECASE), "quota"),
    (re.compile(r"internal (server )?error|internal ?failure|service ?unavailable", re.IGNORECASE), "internal"),
)


def classify_transform_failure(failure_reason: str | None, instance_type: str | None = None) -> FailureClassification:
    """Transient: throttling, capacity shortfalls and SageMaker internal errors - a new attempt later
    can succeed with the same request. Not transient: client errors (bad data, a broken model, a
    missing model or permission) and quotas (ResourceLimitExceeded): those need a person, and
    retrying only bills again; the reason says what to change."""
    text = (failure_reason or "").strip() or "SageMaker gave no failure reason."
    category = _category(text)
    reason = text
    if category == "quota":
        hint = f" for {instance_type}" if instance_type else ""
        reason = (
            f"{text} - request a SageMaker quota increase{hint} (transform job usage) or use a smaller instance type."
        )
    return FailureClassification(transient=category in TRANSIENT, category=category, reason=reason[:MAX_REASON_CHARS])


def _category(text: str) -> Category:
    # Throttling anywhere (even inside "ClientError: ... ThrottlingException") clears up by itself.
    if _KEYWORDS[0][0].search(text):
        return "throttling"
    for prefix, category in _PREFIXES:
        if text.startswith(prefix):
            return category
    for pattern, category in _KEYWORDS:
        if pattern.search(text):
            return category
    return "client"


class TransformPlan(BaseModel):
    """What "Start transform job" sends, derived from the execution input (defaults applied)."""

    name_prefix: str  # the job id as a SageMaker name; the attempt number is appended
    model_name: str
    # ManifestFile: input_uri is a manifest listing exactly what to score; S3Prefix: every object under it.
    input_data_type: Literal["S3Prefix", "ManifestFile"]
    input_uri: str
    output_uri: str
    content_type: str
    accept: str
    split_type: str
    max_payload_mb: int
    instance_type: str
    instance_count: int
    join_source: Literal["Input", "None"]


# TransformJobName: [a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}; "-<attempt>" is appended.
_NAME_LIMIT = 56


def transform_name_prefix(job_id: str) -> str:
    cleaned = re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9-]", "-", job_id)).strip("-")
    if cleaned == job_id and len(cleaned) <= _NAME_LIMIT:
        return cleaned
    # Changed or too long: a digest keeps two different job ids from sharing a name.
    digest = hashlib.sha256(job_id.encode()).hexdigest()[:8]
    return f"{cleaned[: _NAME_LIMIT - 9].rstrip('-') or 'job'}-{digest}"


def transform_plan(job: BatchExecutionInput) -> TransformPlan:
    return TransformPlan(
        name_prefix=transform_name_prefix(job.job_id),
        model_name=job.model_name,
        input_data_type="ManifestFile" if job.input_manifest_key else "S3Prefix",
        input_uri=s3_uri(job.input_bucket, job.input_manifest_key or job.input_prefix),
        output_uri=s3_uri(job.output_bucket, job.output_prefix),
        content_type=job.content_type,
        accept=job.accept or job.content_type,
        split_type=job.split_type,
        max_payload_mb=job.max_payload_mb,
        instance_type=job.instance_type,
        instance_count=job.instance_count,
        join_source="Input" if job.join_with_input else "None",
    )

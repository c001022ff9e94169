"""The one S3 key scheme. Every job's data lives under its caller's prefix, so IAM and listings can
be scoped per caller, and an output always sits next to its input.

The caller's segment (`safe_caller`) is injective: two different identities never share a segment,
and since a segment never contains "/", `<top>/<segment>/` of one caller is never a prefix of
another's. Letters, digits and "-" stay as they are, and so does "." except at the start (a "." or
".." segment is rewritten by HTTP clients); every other byte of the UTF-8 identity becomes "_" and
two lowercase hex digits ("/" is "_2f", ":" is "_3a", "_" itself is "_5f"). So a tenant `acme` is
`acme`, and `arn:aws:iam::123456789012:user/a/b` is `arn_3aaws_3aiam_3a_3a123456789012_3auser_2fa_2fb`,
while `.../user/a_b` ends in `user_2fa_5fb`. The segment is safe in S3 keys, SageMaker S3 URIs and IAM
resource ARNs (no "*", "?" or "$"). An encoding longer than MAX_SEGMENT_CHARS (very long ARN paths)
becomes its first characters, "__" and the base32 SHA-256 of the whole identity: "__" never occurs in
the plain encoding (after "_" come two hex digits), so the two forms cannot meet.
"""

from __future__ import annotations

import base64
import hashlib
import re

ASYNC_PREFIX = "async"
UPLOADS_PREFIX = "uploads"
BATCH_DROP_PREFIX = "batch-input"
BATCH_OUTPUT_PREFIX = "batch-output"
# The exact version of a dropped file, copied for its job: nothing but the drop function writes here.
BATCH_PINNED_PREFIX = "batch-pinned"
# One checkpoint location per training run, shared by all of its attempts.
CHECKPOINTS_PREFIX = "checkpoints"
TRAINING_OUTPUT_PREFIX = "training-output"

# Far below S3's 1024-byte key limit, leaving room for the top folder, job id and file names.
MAX_SEGMENT_CHARS = 160
_DIGEST_MARK = "__"
_DIGEST_CHARS = 52  # base32 of SHA-256, unpadded
_LITERAL = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-.")
_ESCAPED = re.compile(r"_[0-9a-f]{2}")


def _escape(identity: str) -> str:
    out = []
    for position, byte in enumerate(identity.encode("utf-8", errors="surrogatepass")):
        if byte in _LITERAL and not (position == 0 and byte == ord(".")):
            out.append(chr(byte))
        else:
            out.append(f"_{byte:02x}")
    return "".join(out)


def safe_caller(caller: str) -> str:
    """The caller's path segment in every key: `<prefix>/<safe_caller(caller)>/...` (injective)."""
    if not caller:
        raise ValueError("a caller identity is never empty")
    plain = _escape(caller)
    if len(plain) <= MAX_SEGMENT_CHARS:
        return plain
    digest = base64.b32encode(hashlib.sha256(caller.encode("utf-8", errors="surrogatepass")).digest())
    keep = MAX_SEGMENT_CHARS - len(_DIGEST_MARK) - _DIGEST_CHARS
    head = plain[:keep]
    # Cut before a split escape, so the readable part stays decodable by eye.
    cut = head.rfind("_")
    if cut >= keep - 2:
        head = head[:cut]
    return f"{head}{_DIGEST_MARK}{digest.decode().rstrip('=').lower()}"


def caller_of_segment(segment: str) -> str | None:
    """The identity a segment was made from; None for a digest segment (or anything safe_caller never makes)."""
    if not segment or _DIGEST_MARK in segment:
        return None
    raw = bytearray()
    position = 0
    while position < len(segment):
        char = segment[position]
        if char == "_":
            if not _ESCAPED.match(segment, position):
                return None
            raw.append(int(segment[position + 1 : position + 3], 16))
            position += 3
            continue
        if ord(char) not in _LITERAL:
            return None
        raw.append(ord(char))
        position += 1
    try:
        identity = raw.decode("utf-8", errors="surrogatepass")
    except UnicodeDecodeError:
        return None
    # Only the canonical spelling decodes: "_61" for "a" is not a segment safe_caller makes.
    return identity if _escape(identity) == segment else None


def caller_prefix(top: str, caller: str) -> str:
    """`<top>/<segment>/`: the caller's own folder under one of the top prefixes."""
    return f"{top}/{safe_caller(caller)}/"


def async_input_key(caller: str, job_id: str) -> str:
    return f"{caller_prefix(ASYNC_PREFIX, caller)}{job_id}/input"


def async_output_key(caller: str, job_id: str) -> str:
    return f"{caller_prefix(ASYNC_PREFIX, caller)}{job_id}/output"


def upload_key(caller: str, upload_id: str) -> str:
    return f"{caller_prefix(UPLOADS_PREFIX, caller)}{upload_id}"


def batch_drop_model(key: str) -> str | None:
    """`batch-input/<model>/...` names the model a dropped file is for."""
    parts = key.split("/")
    if len(parts) >= 3 and parts[0] == BATCH_DROP_PREFIX and parts[1] and parts[-1]:
        return parts[1]
    return None


def batch_drop_name(key: str) -> str:
    """The dropped file's path below `batch-input/<model>/`, kept in its pinned copy and output names."""
    return key.split("/", 2)[2]


def pinned_input_prefix(caller: str, job_id: str) -> str:
    """Where a dropped file's exact version is copied for its job (the job's only input)."""
    return f"{caller_prefix(BATCH_PINNED_PREFIX, caller)}{job_id}/input/"


def pinned_manifest_key(caller: str, job_id: str) -> str:
    """The SageMaker manifest naming the pinned copy, and nothing else, for the transform job."""
    return f"{caller_prefix(BATCH_PINNED_PREFIX, caller)}{job_id}/manifest.json"


def batch_output_prefix(caller: str, job_id: str) -> str:
    return f"{caller_prefix(BATCH_OUTPUT_PREFIX, caller)}{job_id}/"


def checkpoint_prefix(caller: str, job_id: str) -> str:
    """`checkpoints/<caller>/<job>/`: every attempt of a training run syncs its checkpoints here."""
    return f"{caller_prefix(CHECKPOINTS_PREFIX, caller)}{job_id}/"


def training_output_prefix(caller: str, job_id: str) -> str:
    """Where a training run's attempts write their model artifacts (one folder per training job)."""
    return f"{caller_prefix(TRAINING_OUTPUT_PREFIX, caller)}{job_id}/"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    return bucket, key

"""Webhook signatures: HMAC-SHA256 over "<timestamp>.<raw body>" with the caller's own secret.

Headers: X-Sluice-Timestamp (unix seconds) and X-Sluice-Signature-256 ("v1=<hex>"; several
comma-separated values may be given, any one matching is enough, so a receiver can accept more
than one scheme or secret). The timestamp is inside the signed string, so an old delivery cannot be
replayed with a fresh timestamp; the receiver refuses timestamps outside its tolerance window.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Sluice-Timestamp"
SIGNATURE_HEADER = "X-Sluice-Signature-256"
SCHEME = "v1"


def _key(secret: str | bytes) -> bytes:
    return secret.encode() if isinstance(secret, str) else secret


def sign_webhook(secret: str | bytes, body: bytes, timestamp: int) -> str:
    signed = str(int(timestamp)).encode() + b"." + body
    return f"{SCHEME}=" + hmac.new(_key(secret), signed, hashlib.sha256).hexdigest()


def verify_webhook(
    secret: str | bytes,
    body: bytes,
    timestamp: str | int,
    signature: str,
    *,
    now: float,
    tolerance_seconds: int,
) -> bool:
    """What a receiver does: the timestamp within tolerance of now, then a constant-time comparison
    of the recomputed signature with each given one."""
    try:
        sent_at = int(str(timestamp).strip())
    except ValueError:
        return False
    if abs(now - sent_at) > tolerance_seconds:
        return False
    expected = sign_webhook(secret, body, sent_at)
    matched = False
    for candidate in (part.strip() for part in signature.split(",")):
        # Every candidate is compared (no early exit), each in constant time.
        matched |= hmac.compare_digest(expected.encode(), candidate.encode())
    return matched

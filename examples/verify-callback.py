#!/usr/bin/env python3
"""Verify a callingest callback (Standard Webhooks). Python 3.9+, standard library only.

Usage: python3 verify-callback.py SECRET WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE < body
"""
import base64, hashlib, hmac, sys, time


def verify(secret, headers, body, tolerance_seconds=300):
    """Raise ValueError unless `body` (the raw bytes received) was signed with `secret`.

    `secret` is your "whsec_..." signing secret; `headers` maps lowercase header names to values.
    """
    msg_id = headers.get("webhook-id") or ""
    timestamp = headers.get("webhook-timestamp") or ""
    if not msg_id or not timestamp.isdigit():
        raise ValueError("webhook-id missing or webhook-timestamp not a number")
    if abs(time.time() - int(timestamp)) > tolerance_seconds:
        raise ValueError("timestamp too old or too new (a replay?)")
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest())
    for entry in (headers.get("webhook-signature") or "").split():
        version, _, signature = entry.partition(",")
        if version == "v1" and hmac.compare_digest(signature.encode(), expected):
            return
    raise ValueError("no webhook-signature matches")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    _, secret, msg_id, timestamp, signature = sys.argv
    headers = {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature}
    try:
        verify(secret, headers, sys.stdin.buffer.read())
    except ValueError as error:
        sys.exit(f"invalid: {error}")
    print("valid")

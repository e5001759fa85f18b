"""Sign and post a business event to Herald, as a Salesforce workflow or the ERP would.

    python examples/send_event.py salesforce examples/events/deal_closed.json \
        --secret dev-sf-secret [--url http://127.0.0.1:8080]

The secret is the source's entry in HERALD_EVENT_SECRETS (or pass --secret-env NAME).
Herald checks two headers (service/herald/web/events.py):

    X-Herald-Timestamp: <unix seconds>
    X-Herald-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + raw body)>

A request older than HERALD_EVENT_TOLERANCE_SECONDS (default 300) is refused, so sign
just before sending. Answers: 202 runs started, 200 the same event again (same runs),
401/403 signing problems, 404 unknown source, 400 malformed, 422 the same event id with
different content. Standard library only, so it runs anywhere Python 3.11+ does.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def sign(secret: str, timestamp: str, body: bytes) -> str:
    return "v1=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def send(url: str, source: str, body: bytes, secret: str, timestamp: int | None = None) -> tuple[int, str]:
    stamp = str(timestamp if timestamp is not None else int(time.time()))
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"--url must be http(s): {url!r}")
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        f"{url.rstrip('/')}/webhooks/events/{source}",
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "X-Herald-Timestamp": stamp,
            "X-Herald-Signature": sign(secret, stamp, body),
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (scheme checked above)
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="event source, e.g. salesforce or erp")
    parser.add_argument("file", type=Path, help="JSON event {id, type, occurred_at?, data}")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="Herald's base URL")
    parser.add_argument("--secret", help="the source's signing secret")
    parser.add_argument("--secret-env", help="read the secret from this environment variable instead")
    args = parser.parse_args(argv)
    secret = args.secret or (os.environ.get(args.secret_env, "") if args.secret_env else "")
    if not secret:
        parser.error("give --secret or --secret-env")
    body = json.dumps(json.loads(args.file.read_text())).encode()  # compact, as a sender would
    status, text = send(args.url, args.source, body, secret)
    print(status, text.strip())
    return 0 if status in (200, 202) else 1


if __name__ == "__main__":
    sys.exit(main())

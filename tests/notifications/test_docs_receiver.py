"""The receiver in docs/notifications.md, run as written, against the real webhook adapter:
it accepts signed deliveries, refuses a wrong signature and a stale one, and handles a
replayed delivery once."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.client
import io
import re
import threading
import time
from collections.abc import Iterator
from http.server import HTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import free_port
from sagequeue.config import Settings
from sagequeue.notifiers.webhook import WebhookNotifier
from sagequeue.ports import DeliveryError, OutboxMessage

DOC = Path(__file__).parent.parent.parent / "docs" / "notifications.md"
SECRET = "a long random secret"
BODY = b'{"invocationStatus":"Completed","inferenceId":"i-1"}'


def documented_receiver() -> dict[str, Any]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    (code,) = [block for block in blocks if "class Receiver" in block]
    lines = code.rstrip().splitlines()
    assert lines[-1].startswith("HTTPServer(")  # serving is left to the test
    namespace: dict[str, Any] = {}
    exec("\n".join(lines[:-1]), namespace)  # the documented code, as written
    return namespace


@pytest.fixture
def receiver() -> Iterator[tuple[str, io.StringIO]]:
    namespace = documented_receiver()
    printed = io.StringIO()
    namespace["print"] = lambda *args: printed.write(" ".join(map(str, args)) + "\n")
    namespace["Receiver"].log_message = lambda *args: None
    server = HTTPServer(("127.0.0.1", free_port()), namespace["Receiver"])
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/hook", printed
    server.shutdown()
    server.server_close()


def deliver(url: str, secret: str, message_id: str = "m-1") -> None:
    notifier = WebhookNotifier(Settings(webhook_secrets={url: secret}))
    message = OutboxMessage(message_id, "ep", "i-1", url, BODY, time.time())
    asyncio.run(notifier.deliver(message, 5.0))


def post(url: str, headers: dict[str, str]) -> int:
    port = int(url.split(":")[2].split("/")[0])
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    with contextlib.closing(connection):
        connection.request("POST", "/hook", BODY, {"Content-Type": "application/json", **headers})
        return connection.getresponse().status


def test_the_documented_receiver_accepts_a_signed_delivery(receiver) -> None:
    url, printed = receiver
    deliver(url, SECRET)
    assert printed.getvalue() == "Completed\n"


def test_the_documented_receiver_refuses_a_wrong_signature(receiver) -> None:
    url, printed = receiver
    with pytest.raises(DeliveryError, match="HTTP 401"):
        deliver(url, "another secret")
    assert printed.getvalue() == ""


def test_the_documented_receiver_refuses_a_stale_delivery(receiver) -> None:
    url, printed = receiver
    stale = int(time.time()) - 3600
    digest = hmac.new(SECRET.encode(), f"m-1.{stale}.".encode() + BODY, hashlib.sha256)
    headers = {
        "webhook-id": "m-1",
        "webhook-timestamp": str(stale),
        "webhook-signature": "v1," + base64.b64encode(digest.digest()).decode(),
    }
    assert post(url, headers) == 401
    assert printed.getvalue() == ""


def test_the_documented_receiver_handles_a_replayed_delivery_once(receiver) -> None:
    url, printed = receiver
    deliver(url, SECRET, "same-id")
    deliver(url, SECRET, "same-id")  # answered, not handled again
    deliver(url, SECRET, "other-id")
    assert printed.getvalue() == "Completed\nCompleted\n"

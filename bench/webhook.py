"""A local webhook receiver for the notification rows: records when each notification
arrives, by its inferenceId (threaded HTTP server on 127.0.0.1)."""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from types import TracebackType


class WebhookReceiver:
    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.arrivals: dict[str, float] = {}  # inferenceId -> time.time() at arrival
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    receiver.arrivals.setdefault(json.loads(body)["inferenceId"], arrived)
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notifications"

    def arrival(self, inference_id: str) -> float | None:
        with self._lock:
            return self.arrivals.get(inference_id)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

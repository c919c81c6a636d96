"""
A loopback HTTP server that records webhook calls, for tests of Strata's alert webhooks.

`WebhookRecorder` listens on 127.0.0.1 (a port the kernel picks), answers every ``POST`` with
``204 No Content`` and keeps each call: path, headers, raw body and the body parsed as JSON (None
when it is not JSON).  Anything but POST gets ``405``.  It runs in a thread of its own; use it as a
context manager, or call `close`, so the thread and socket never outlive the test.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class WebhookCall:
    """One request the recorder answered."""

    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    received_at: float  # time.time() when the body had been read

    @property
    def json(self) -> Any:
        """The body as JSON, or None if it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class WebhookRecorder:
    """Records every request to ``url``; `calls` is a snapshot, safe to read from the test."""

    def __init__(self, path: str = "/hook") -> None:
        self._lock = threading.Lock()
        self._calls: list[WebhookCall] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _record(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                call = WebhookCall(self.command, self.path, headers, body, time.time())
                with recorder._lock:
                    recorder._calls.append(call)

            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                self._record()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:  # noqa: N802
                self._record()
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep pytest's output clean; the calls are the record

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.url = f"http://127.0.0.1:{port}{path}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def calls(self) -> list[WebhookCall]:
        with self._lock:
            return list(self._calls)

    def events(self, event: str) -> list[WebhookCall]:
        """The POSTs whose JSON body has ``"event": event``."""
        return [
            c
            for c in self.calls
            if c.method == "POST" and isinstance(c.json, dict) and c.json.get("event") == event
        ]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> WebhookRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

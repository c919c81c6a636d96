"""
A real Prometheus server (Debian's ``prometheus`` package) on loopback, scraping one target, for
the metrics acceptance test.  Its storage lives in the test's directory; ``stop()`` ends it.
Without the binary the test fails (in CI a missing peer is a failure, not a skip).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.peers.net import free_port, wait_for_port


class PrometheusProcess:
    """Prometheus scraping ``target`` (``host:port``) at ``metrics_path`` every second."""

    def __init__(
        self, root: Path, target: str, metrics_path: str = "/metrics", *, bearer: str = ""
    ) -> None:
        """``bearer``: the API key Prometheus sends (``/metrics`` wants an operator's)."""
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus is missing: apt-get install prometheus (.ci/run installs it)")
        self.binary = binary
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = root / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: strata\n"
            f"    metrics_path: {json.dumps(metrics_path)}\n"
            f"    static_configs:\n      - targets: [{json.dumps(target)}]\n"
            + (
                f"    authorization:\n      type: Bearer\n      credentials: {json.dumps(bearer)}\n"
                if bearer
                else ""
            )
        )
        self.log = root / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [self.binary, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        # It listens before its storage is open, and answers 503 until then: wait for /-/ready.
        while not (wait_for_port(self.port, 0.2) and self._ready()):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"prometheus did not start:\n{self.log_text()[-3000:]}")
            time.sleep(0.1)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(  # noqa: S310 (loopback)
                f"http://127.0.0.1:{self.port}/-/ready", timeout=5
            ) as response:
                return bool(response.status == 200)
        except OSError:  # urllib's HTTPError (503) is an OSError too
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query over the HTTP API: the result vector (each: metric, value)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (loopback)
            answer = json.load(response)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

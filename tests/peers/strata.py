"""
Run Strata itself as a real ``twistd`` subprocess, the way an admin does, for interop, crash and
disk-full tests.  Every process started here is stopped by ``stop()``/``kill()``; use the
``strata_factory`` fixture, which always cleans up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
CLI = [sys.executable, "-m", "strata_twisted.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(
    port: int,
    timeout: float = 20.0,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"process exited with {process.returncode} before listening\n{tail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


class StrataProcess:
    """One Strata server: its own config file, data dir and intake port."""

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        extra_config: str = "",
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.data_dir = data_dir or root / "strata-data"
        self.config = root / "strata.toml"
        self.log = root / "twistd.log"
        self.config.write_text(
            f'data_dir = "{self.data_dir}"\nhostname = "strata.test"\n'
            f'[intake]\nlisten = ["127.0.0.1:{self.port}"]\nmax_connections_per_ip = 1000\n'
            + extra_config
        )
        self.process: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*CLI, "--config", str(self.config), *args], capture_output=True, text=True, timeout=60
        )
        if check and result.returncode != 0:
            raise AssertionError(f"strata {' '.join(args)} failed: {result.stderr}")
        return result

    def queue(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("queue", "list", "--json").stdout)  # type: ignore[no-any-return]

    def start(self) -> None:
        assert self.process is None or self.process.poll() is not None
        out = self.log.open("ab")
        self.process = subprocess.Popen(
            [
                *TWISTD,
                "-n",
                "--pidfile=",
                f"--logfile={self.log}",
                "strata",
                "--config",
                str(self.config),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=self.root,
            start_new_session=True,
        )
        out.close()
        wait_for_port(self.port, process=self.process, log=self.log)

    def kill(self) -> None:
        """kill -9: the crash the durability tests need."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

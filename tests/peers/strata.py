"""
Run Strata itself as a real ``twistd`` subprocess, the way an admin does, for interop, crash and
disk-full tests and for the benchmarks.  Every process started here is stopped by
``stop()``/``kill()``; in tests use the ``strata_factory`` fixture, which always cleans up.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.peers.net import free_port, wait_for_port

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
CLI = [sys.executable, "-m", "strata_twisted.cli"]


def wait_for_listener(
    port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 30.0
) -> None:
    """Wait until ``process`` listens on 127.0.0.1:port; raise with its log if it dies first."""
    deadline = time.monotonic() + timeout
    while not wait_for_port(port, 0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            state = f"exited with {process.returncode}" if process.poll() is not None else "hung"
            raise RuntimeError(f"Strata {state} before listening on 127.0.0.1:{port}\n{tail}")


class StrataProcess:
    """One Strata server: its own config file, data dir and intake port."""

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        data_dir: Path | None = None,
        extra_config: str = "",
        twistd_cmd: Sequence[str] = TWISTD,
        cli_cmd: Sequence[str] = CLI,
        admin_port: int | None = None,
    ) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.data_dir = data_dir or root / "strata-data"
        self.config = root / "strata.toml"
        self.log = root / "twistd.log"
        self.twistd_cmd = list(twistd_cmd)
        self.cli_cmd = list(cli_cmd)
        # The IMAP, submission and admin web listeners are off unless the test configures
        # them: their embedded defaults are fixed ports, which two Strata processes (or a bench
        # left running) cannot share.  They come before [intake]: extra_config may go on with
        # [intake] keys, and a test may append keys to the table it ends with.
        quiet = "" if "[imap]" in extra_config else "[imap]\nlisten = []\n"
        if "[submission]" not in extra_config:
            quiet += "[submission]\nlisten = []\ntls_listen = []\n"
        # admin_port turns the admin web listener on at that port.
        self.admin_port = admin_port
        if "[admin]" not in extra_config:
            admin_listen = f'"127.0.0.1:{admin_port}"' if admin_port else ""
            quiet += f"[admin]\nlisten = [{admin_listen}]\n"
        self.config.write_text(
            f'data_dir = "{self.data_dir}"\nhostname = "strata.test"\n'
            + quiet
            + f'[intake]\nlisten = ["127.0.0.1:{self.port}"]\nmax_connections_per_ip = 1000\n'
            + extra_config
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [*self.cli_cmd, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"strata {' '.join(args)} failed: {result.stderr[-2000:]}")
        return result

    def queue(self) -> list[dict[str, Any]]:
        entries = json.loads(self.cli("queue", "list", "--json").stdout)
        assert isinstance(entries, list), f"queue list --json gave {type(entries).__name__}"
        return entries

    def start(self, timeout: float = 30.0) -> None:
        assert self.process is None or self.process.poll() is not None
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [*self.twistd_cmd, "-n", "--pidfile=", f"--logfile={self.log}", "strata",
                 "--config", str(self.config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=self.root, start_new_session=True,
            )  # fmt: skip
        try:
            wait_for_listener(self.port, self.process, self.log, timeout)
        except RuntimeError:
            self.kill()
            raise

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
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def bootstrap_password(strata: StrataProcess, timeout: float = 30.0) -> str:
    """The first start's operator password (``<data_dir>/admin-password``), once the server
    has written it and its admin listener accepts connections."""
    path = strata.data_dir / "admin-password"
    deadline = time.monotonic() + timeout
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"no {path} after {timeout:g}s\n{strata.log_text()[-3000:]}")
        time.sleep(0.05)
    if strata.admin_port is not None and not wait_for_port(strata.admin_port, timeout):
        raise RuntimeError(f"the admin listener is not up\n{strata.log_text()[-3000:]}")
    return path.read_text().strip()

"""
The README's first command, ``./start``, works as written on the stock Debian Python, in a clean
checkout: it makes ``.venv/``, installs Strata into it (never into the system interpreter, which
PEP 668 forbids on Debian and Ubuntu) and runs ``twistd -n strata``, which accepts mail.  A second
start finds the install current and does not install again.

Debian's own ``/usr/bin/python3`` is used, with a PATH that holds nothing else (so neither this
test's virtual environment nor a pyenv interpreter can stand in for it).  ``.ci/run`` installs
``python3`` and ``python3-venv``; pip downloads Strata's dependencies as ``.ci/run`` does.
"""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
from pathlib import Path

import pytest

from tests.peers.net import free_port
from tests.peers.strata import wait_for_listener

ROOT = Path(__file__).resolve().parent.parent
STOCK_PYTHON = Path("/usr/bin/python3")
pytestmark = pytest.mark.slow


def _clean_checkout(target: Path) -> None:
    """The files a fresh clone holds: those git tracks (as they are in the working tree)."""
    names = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    for name in names:
        source = ROOT / name
        if not source.is_file():
            continue
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(source.read_bytes())
        (target / name).chmod(source.stat().st_mode & 0o777)


def _start(checkout: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(checkout.parent),
        "LANG": "C.UTF-8",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            ["./start", "--config", str(config)],
            cwd=checkout, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def test_start_installs_into_a_venv_with_the_stock_python_and_serves(tmp_path: Path) -> None:
    if not STOCK_PYTHON.exists():
        pytest.fail(f"{STOCK_PYTHON} (Debian's python3) is missing: .ci/run installs it")
    checkout = tmp_path / "strata"
    _clean_checkout(checkout)
    port = free_port()
    config = tmp_path / "strata.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "data"}"\nhostname = "strata.test"\n'
        f'[intake]\nlisten = ["127.0.0.1:{port}"]\n'
        "[imap]\nlisten = []\n[submission]\nlisten = []\ntls_listen = []\n[admin]\nlisten = []\n"
    )
    log = tmp_path / "start.log"
    process = _start(checkout, config, log)
    try:
        wait_for_listener(port, process, log, timeout=600)
        venv_python = checkout / ".venv" / "bin" / "python"
        # The venv's interpreter is Debian's, and Strata is installed there, not in the system's.
        base = subprocess.run(
            [str(venv_python), "-c", "import sys; print(sys.base_prefix)"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        assert base == "/usr"
        system = subprocess.run(
            [str(STOCK_PYTHON), "-c", "import strata_twisted"],
            cwd=tmp_path, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        assert system.returncode != 0, "Strata landed in the system interpreter"
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.ehlo("client.test")
            assert client.mail("a@b.test")[0] == 250
            # No domain is protected yet: it answers as the server does, relay denied.
            assert client.rcpt("u@unprotected.test")[0] == 550
    finally:
        _stop(process)
    assert "Installing Strata into .venv" in log.read_text(errors="replace")

    # A second start of an unchanged checkout reuses the install.
    log.write_bytes(b"")
    process = _start(checkout, config, log)
    try:
        wait_for_listener(port, process, log, timeout=120)
    finally:
        _stop(process)
    assert "Installing Strata" not in log.read_text(errors="replace")

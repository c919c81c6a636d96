"""
``twistd -n strata`` as users run it: the embedded default, invalid configs, the plugin lookup.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from tests.peers.strata import TWISTD, wait_for_listener

pytestmark = pytest.mark.interop


def test_embedded_default_starts_in_the_current_directory(tmp_path) -> None:
    log = tmp_path / "twistd.log"
    process = subprocess.Popen(
        [*TWISTD, "-n", "--pidfile=", f"--logfile={log}", "strata"],
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        wait_for_listener(2525, process, log)
        with socket.create_connection(("127.0.0.1", 2525), timeout=5) as s:
            assert s.recv(100).startswith(b"220 ")
        text = log.read_text()
        assert "SMTP intake listening on 127.0.0.1:2525" in text
        assert (tmp_path / "strata-data" / "strata.db").exists()
        assert (tmp_path / "strata-data" / "tls" / "cert.pem").exists()
    finally:
        process.terminate()
        process.wait(15)
    # twistd stops cleanly on SIGTERM and then exits by that signal (Twisted re-raises it).
    assert process.returncode in (0, -15)
    assert "Server Shut Down." in log.read_text()


def test_invalid_config_names_the_key_and_starts_nothing(tmp_path) -> None:
    (tmp_path / "strata.toml").write_text(
        '[intake]\nlisten = ["127.0.0.1:2526"]\nmax_recipients = 0\n'
    )
    result = subprocess.run(
        [*TWISTD, "-n", "--pidfile=", "strata"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "intake.max_recipients" in result.stdout + result.stderr
    assert not (tmp_path / "strata-data").exists()


def test_port_in_use_fails_startup(tmp_path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        (tmp_path / "strata.toml").write_text(f'[intake]\nlisten = ["127.0.0.1:{port}"]\n')
        started = time.monotonic()
        result = subprocess.run(
            [*TWISTD, "-n", "--pidfile=", "strata"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode != 0
    assert time.monotonic() - started < 30
    assert "Address already in use" in result.stdout + result.stderr

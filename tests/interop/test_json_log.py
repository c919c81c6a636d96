"""
``[log] format = "json"`` with the real ``twistd -n strata`` (#13, point 6): every line of its log
file is one JSON object, with the event's fields, its text and its level, from startup (twistd's
own lines included) to shutdown.
"""

from __future__ import annotations

import json
import smtplib
from typing import Any

import pytest

from tests.peers.strata import StrataProcess

pytestmark = pytest.mark.interop


def test_twistd_writes_one_json_object_per_line(strata_factory: Any) -> None:
    strata: StrataProcess = strata_factory(extra_config='[log]\nformat = "json"\n')
    strata.start()
    with smtplib.SMTP("127.0.0.1", strata.port, timeout=30) as client:
        client.ehlo("client.test")
        assert client.mail("a@sender.test")[0] == 250
        assert client.rcpt("u@unprotected.test")[0] == 550
    strata.stop()
    lines = strata.log_text().splitlines()
    assert len(lines) > 5
    records = [json.loads(line) for line in lines]  # each line parses on its own
    assert all(isinstance(r, dict) and {"time", "level", "text"} <= r.keys() for r in records)
    listening = [r for r in records if r.get("what") == "SMTP intake"]
    assert len(listening) == 1
    assert listening[0]["text"] == f"SMTP intake listening on 127.0.0.1:{strata.port}"
    assert listening[0]["address"] == f"127.0.0.1:{strata.port}"
    assert listening[0]["format"] == "{what} listening on {address}"
    assert listening[0]["level"] == "info"
    assert listening[0]["namespace"] == "strata_twisted.service.ListenerService"
    assert any(r["text"].startswith("twistd ") and "starting up" in r["text"] for r in records)
    assert records[-1]["text"] == "Server Shut Down."

"""
Acceptance (#13): Schemathesis runs against the live ``/api/v1/openapi.json`` of a real
``twistd -n strata``: no server error, and every answer valid against the document (status code,
content type and body schema).

The run uses an ``admin``-scope key of an operator account, so it can reach every operation.  An
operator may delete operator accounts and revoke keys, and a run that deleted its own account or
key midway would go on getting 401s, valid but testing nothing; a first run did exactly that,
since Schemathesis reuses values it read in answers (the account's name from ``GET
/api/v1/admins``, the key's id from ``GET /api/v1/api-keys``).  So the account has a name of its
own, and hooks (L{tests.interop.schemathesis_hooks}) drop the few DELETE cases aimed at that
account or key; every operation is still called, DELETE included.  The stateful phase is off to
keep the run short.  At the end the key must still work, which proves the run acted as the
operator throughout.

Schemathesis is a required peer: missing, the test fails (it does not skip).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.peers.admin_api import AdminClient
from tests.peers.net import free_port
from tests.peers.strata import StrataProcess, bootstrap_password

pytestmark = pytest.mark.interop

# Bounded so the run takes under a minute on two cores (the whole suite must stay under 20
# minutes in CI); every operation still gets its coverage cases and some fuzzing.
MAX_EXAMPLES = 10
MAX_TIME = 60
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
)


def schemathesis_command() -> list[str]:
    """The schemathesis CLI; a missing one fails the test (CI installs it)."""
    found = shutil.which("schemathesis") or shutil.which("st")
    if found is None:
        pytest.fail("schemathesis is not installed (pip install 'schemathesis>=4'); it is required")
    return [found]


def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(
    strata_factory: Any, tmp_path: Path
) -> None:
    command = schemathesis_command()
    admin_port = free_port()
    strata: StrataProcess = strata_factory(
        admin_port=admin_port,
        # Failed logins are many here; their growing delay would only slow the run down.
        # MX lookups (DSNs, alert mail to generated addresses) go to a closed loopback port.
        extra_config=(
            f'[monitor]\nprobe_interval = 5\n[relay]\nresolver = "127.0.0.1:{free_port()}"\n'
        ),
    )
    strata.config.write_text(
        strata.config.read_text().replace("[admin]\n", "[admin]\nlogin_max_delay = 0\n", 1)
    )
    strata.start()
    password = bootstrap_password(strata)
    browser = AdminClient(admin_port)
    assert browser.login("admin", password).status == 200
    fuzzer = f"fuzz-{secrets.token_hex(8)}"
    made = browser.post(
        "/api/v1/admins",
        {"name": fuzzer, "role": "operator", "password": secrets.token_urlsafe(18)},
    )
    assert made.status == 201, made.body
    key_answer = browser.post("/api/v1/api-keys", {"admin": fuzzer, "scope": "admin"})
    assert key_answer.status == 201, key_answer.body
    key = key_answer.body["key"]
    # Something for the operations to find: a tenant, a domain with a user, queued mail.
    operator = AdminClient(admin_port, key=key)
    assert operator.post("/api/v1/resellers", {"name": "fuzz-r"}).status == 201
    assert (
        operator.post("/api/v1/customers", {"name": "fuzz-c", "reseller": "fuzz-r"}).status == 201
    )
    domain = {"name": "fuzz.test", "customer": "fuzz-c", "relay": f"127.0.0.1:{free_port()}"}
    assert operator.post("/api/v1/domains", domain).status == 201

    report = tmp_path / "schemathesis.json"
    started = time.monotonic()
    run = subprocess.run(
        [
            *command,
            "run",
            f"http://127.0.0.1:{admin_port}/api/v1/openapi.json",
            "--checks",
            ",".join(CHECKS),
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            str(MAX_EXAMPLES),
            "--max-time",
            str(MAX_TIME),
            # One worker: with two, Hypothesis describes filter lambdas from two threads at once
            # and its AST walk can fail ("AST constructor recursion depth mismatch"), a
            # Runtime Error of the tool's own that would fail the run at random.
            "--workers",
            "1",
            "--seed",
            "13",
            "--request-timeout",
            "30",
            "--suppress-health-check",
            "all",
            "-H",
            f"Authorization: Bearer {key}",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(report),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=MAX_TIME + 120,
        cwd=tmp_path,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(sys.path),
            "SCHEMATHESIS_HOOKS": "tests.interop.schemathesis_hooks",
            "STRATA_FUZZ_ADMIN": fuzzer,
            "STRATA_FUZZ_KEY_ID": key_answer.body["id"],
        },
    )
    took = time.monotonic() - started
    output = run.stdout[-12000:] + run.stderr[-3000:]
    print(output)  # noqa: T201 (the summary: operations, examples, duration)
    print(f"schemathesis took {took:.0f} s")  # noqa: T201
    server_errors = [
        line for line in strata.log_text().splitlines() if "admin API" in line and "failed" in line
    ]
    assert not server_errors, "\n".join(server_errors[:20])
    assert run.returncode == 0, output
    # The run acted as the operator to the end: its key still works.
    still = operator.get("/api/v1/status")
    assert still.status == 200, still.body
    assert _tested_operations(report) >= 30, "schemathesis tested fewer operations than exist"


def _tested_operations(report: Path) -> int:
    """How many distinct operations the run sent requests to (from its ndjson report)."""
    seen: set[str] = set()
    if not report.exists():
        return 0
    for line in report.read_text().splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        _collect_labels(event, seen)
    return len(seen)


def _collect_labels(value: Any, seen: set[str]) -> None:
    if isinstance(value, dict):
        label = value.get("label")
        if isinstance(label, str) and label.split(" ", 1)[0] in (
            "GET",
            "POST",
            "PUT",
            "PATCH",
            "DELETE",
        ):
            seen.add(label)
        for item in value.values():
            _collect_labels(item, seen)
    elif isinstance(value, list):
        for item in value:
            _collect_labels(item, seen)

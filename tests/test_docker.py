"""
The container image's files, checked by reading them (no Docker engine runs on our machines):

- ``.dockerignore`` keeps a local ``strata-data/`` (DKIM and TLS keys, password hashes, mail), a
  local ``strata.toml`` and key files out of the build context, yet leaves everything the image
  installs from: a wheel built from exactly the files the context would hold carries Strata and
  its twistd plugin.
- The Dockerfile EXPOSEs every port the container configuration listens on, and nothing else.
- The container configuration (``docker/strata.toml``) listens on all interfaces, keeps its data
  in the image's VOLUME, and that directory belongs to the unprivileged runtime user before it
  becomes a volume (so a new named volume is writable by that user).

Docker matches ``.dockerignore`` patterns against paths relative to the context root, with Go's
``filepath.Match`` per path element, ``**`` for any number of elements and ``!`` for exceptions
(the last matching rule wins); a directory that matches takes its contents with it.  The small
matcher below follows those rules (no maintained Python package implements them).
"""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from strata_twisted.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CONTAINER_CONFIG = ROOT / "docker" / "strata.toml"


def _pattern(text: str) -> re.Pattern[str]:
    out = ""
    i = 0
    while i < len(text):
        if text.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif text.startswith("**", i):
            out += ".*"
            i += 2
        elif text[i] == "*":
            out += "[^/]*"
            i += 1
        elif text[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(text[i])
            i += 1
    return re.compile(out + r"\Z")


def _rules() -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        text = line[1:] if keep else line
        rules.append((keep, _pattern(text.strip("/"))))
    return rules


def excluded(path: str, rules: list[tuple[bool, re.Pattern[str]]] | None = None) -> bool:
    """Whether Docker leaves ``path`` (relative to the context root) out of the build context."""
    rules = _rules() if rules is None else rules
    parts = path.split("/")
    # A path is out when it, or a directory above it, matches (the last matching rule decides).
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        verdict = None
        for keep, pattern in rules:
            if pattern.match(prefix):
                verdict = not keep
        if verdict:
            return True
    return False


def _dockerfile() -> list[tuple[str, str]]:
    """The Dockerfile's instructions (continuation lines joined), as (KEYWORD, arguments)."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " "
        if not line.rstrip().endswith("\\"):
            keyword, _, rest = pending.strip().partition(" ")
            out.append((keyword.upper(), rest.strip()))
            pending = ""
    return out


@pytest.mark.parametrize(
    "path",
    [
        # Caught by the strata-data rule alone: mail bodies, the whole directory.
        "strata-data/messages/20261207/0JXTB4C5D6FGHJK",
        "strata-data/dkim/example.test/s1.key",
        "bench/results/strata-data/messages/20261207/0JXTB4C5D6FGHJK",
        # Keys and databases anywhere, and a local configuration.
        "strata-data/tls/key.pem",
        "copy/strata.db",
        "strata.toml",
        "notes/server.key",
        "old-copy.db",
        ".git/config",
        ".venv/bin/python",
        "strata_twisted/__pycache__/tap.cpython-311.pyc",
        "twisted/plugins/dropin.cache",
    ],
)
def test_a_local_data_directory_and_keys_are_never_in_the_build_context(path: str) -> None:
    assert excluded(path)


@pytest.mark.parametrize(
    "path",
    [
        "setup.cfg",
        "pyproject.toml",
        "README.md",
        "strata_twisted/tap.py",
        "strata_twisted/storage/sqlite_schema.py",
        "twisted/plugins/strata_plugin.py",
        "docker/strata.toml",
    ],
)
def test_what_the_image_installs_from_is_in_the_build_context(path: str) -> None:
    assert (ROOT / path).exists()
    assert not excluded(path)


def test_the_matcher_follows_dockers_rules() -> None:
    rules = [(False, _pattern("**/secret")), (False, _pattern("docs")), (True, _pattern("docs"))]
    assert excluded("secret/a", rules) and excluded("a/b/secret", rules)
    assert not excluded("docs/x", rules)  # the later "!docs" wins
    assert not excluded("secrets", rules)
    assert excluded("a.pem", [(False, _pattern("*.pem"))])
    assert not excluded("sub/a.pem", [(False, _pattern("*.pem"))])  # root only without **


@pytest.mark.slow
def test_a_wheel_built_from_the_build_context_carries_strata(tmp_path: Path) -> None:
    # What `COPY . /src` would copy from a checkout in which Strata has run (a data directory with
    # a key in it) is exactly what .dockerignore lets through; `pip install .` must work on it.
    context = tmp_path / "context"
    rules = _rules()
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    # A checkout in which Strata has run: a data directory with a key and a body, a local config.
    sample = {
        "strata-data/dkim/example.test/s1.key": b"-----BEGIN PRIVATE KEY-----\n",
        "strata-data/messages/20261207/0JXTB4C5D6FGHJK": b"Subject: private\r\n\r\n",
        "strata.toml": b'data_dir = "strata-data"\n',
    }
    copied = []
    for name in [*listed, *sample]:
        if excluded(name, rules):
            continue
        if name in sample:
            data = sample[name]
        elif (ROOT / name).is_file():
            data = (ROOT / name).read_bytes()
        else:
            continue
        (context / name).parent.mkdir(parents=True, exist_ok=True)
        (context / name).write_bytes(data)
        copied.append(name)
    assert not [n for n in copied if n in sample or n.startswith(("tests/", ".git/"))]
    wheels = tmp_path / "wheels"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(context)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = wheels.glob("strata_twisted-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "twisted/plugins/strata_plugin.py" in names
    assert "strata_twisted/tap.py" in names


def test_the_image_exposes_every_port_the_container_listens_on() -> None:
    settings = load_config(CONTAINER_CONFIG)
    listeners = [
        *settings.intake.listen,
        *settings.imap.listen,
        *settings.imap.tls_listen,
        *settings.submission.listen,
        *settings.submission.tls_listen,
    ]
    # Inside a container a listener on 127.0.0.1 is unreachable from outside.
    assert {address.host for address in listeners} <= {"0.0.0.0", "::"}
    exposed = {
        int(port) for keyword, args in _dockerfile() if keyword == "EXPOSE" for port in args.split()
    }
    assert exposed == {address.port for address in listeners}
    # Unprivileged ports: the runtime user can bind them whatever the Docker version.
    assert all(port >= 1024 for port in exposed)


def test_the_data_volume_belongs_to_the_runtime_user() -> None:
    instructions = _dockerfile()
    settings = load_config(CONTAINER_CONFIG)
    data_dir = str(settings.data_dir)
    (volume,) = [args for keyword, args in instructions if keyword == "VOLUME"]
    assert data_dir in volume
    (user,) = [args for keyword, args in instructions if keyword == "USER"]
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    assert f"useradd --system --home {Path(data_dir).parent}" in runs
    assert f"mkdir -p {data_dir}" in runs
    assert f"chown {user}:{user} {data_dir}" in runs
    # The directory is made and given away before it becomes a volume, and the server runs as
    # that user, never as root.
    order = [keyword for keyword, _ in instructions]
    assert order.index("USER") < order.index("CMD")
    assert order.index("VOLUME") > max(i for i, k in enumerate(order) if k == "RUN")


def test_twistd_and_the_cli_in_the_container_read_the_container_configuration() -> None:
    instructions = _dockerfile()
    runs = " ".join(args for keyword, args in instructions if keyword == "RUN")
    (workdir,) = [args for keyword, args in instructions if keyword == "WORKDIR"][-1:]
    # docker/strata.toml becomes /etc/strata/strata.toml, found as ./strata.toml from WORKDIR.
    assert "docker/strata.toml /etc/strata/strata.toml" in runs
    assert f"ln -s /etc/strata/strata.toml {workdir}/strata.toml" in runs
    (cmd,) = [args for keyword, args in instructions if keyword == "CMD"]
    assert '"twistd", "-n"' in cmd and '"strata"' in cmd

"""The relay's trust root for the ``verify`` policy (``tls.ca_file``): loaded, or a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import ssl

from strata_twisted.errors import ConfigError
from strata_twisted.server.tls import load_trust_root
from tests.peers.tlsca import TestCA


def test_no_ca_file_means_the_system_trust_store() -> None:
    assert load_trust_root(None) is None


def test_a_ca_file_becomes_a_trust_root(tmp_path: Path) -> None:
    first, second = TestCA(tmp_path / "one"), TestCA(tmp_path / "two", name="Second CA")
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes(first.ca_file.read_bytes() + second.ca_file.read_bytes())
    root = load_trust_root(bundle)
    assert root is not None
    ssl.optionsForClientTLS("primary.test", root)  # usable as optionsForClientTLS's trustRoot


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "cannot read"), (b"not a certificate\n", "no PEM certificate"), (b"", "no PEM")],
)
def test_a_bad_ca_file_names_the_key(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "ca.pem"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ConfigError) as e:
        load_trust_root(path)
    assert e.value.key == "tls.ca_file"
    assert message in str(e.value)

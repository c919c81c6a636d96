"""
TLS for the listeners: load the configured certificate, or make a self-signed one on first start.
And the CA certificates the relay trusts when a domain's TLS policy is ``verify``.

Called from the composition root before the reactor runs (key generation blocks, so it must never
run on a live reactor).  The generated key is written with mode 0600.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import ssl

from strata_twisted.errors import ConfigError

if TYPE_CHECKING:
    # Public through optionsForClientTLS's signature, but defined only in the private module.
    from twisted.internet._sslverify import IOpenSSLTrustRoot


def generate_self_signed(cert_path: Path, key_path: Path, hostname: str, now: float) -> None:
    """Write a self-signed ECDSA P-256 certificate for ``hostname``, valid for ten years."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname[:64] or "localhost")])
    start = datetime.datetime.fromtimestamp(now, tz=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - datetime.timedelta(days=1))
        .not_valid_after(start + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname or "localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_pem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def load_server_context(
    cert_path: Path, key_path: Path, *, hostname: str, generate: bool, now: float
) -> ssl.CertificateOptions:
    """
    The TLS context for our listeners.  When the files are missing and ``generate`` is true, make a
    self-signed pair first.  Raises L{ConfigError} naming ``tls.certificate`` on any problem.
    """
    if not cert_path.exists() and generate:
        generate_self_signed(cert_path, key_path, hostname, now)
    try:
        cert_pem = cert_path.read_bytes()
        key_pem = key_path.read_bytes()
        if key_path == cert_path:
            certificate = ssl.PrivateCertificate.loadPEM(cert_pem)
        else:
            certificate = ssl.PrivateCertificate.loadPEM(cert_pem + b"\n" + key_pem)
    except OSError as e:
        raise ConfigError("tls.certificate", f"cannot read {e.filename}: {e.strerror}") from None
    except Exception as e:
        raise ConfigError("tls.certificate", f"cannot load {cert_path}: {e}") from None
    return certificate.options()  # type: ignore[no-any-return]


def load_trust_root(ca_file: Path | None) -> IOpenSSLTrustRoot | None:
    """
    The CA certificates in the PEM file ``ca_file`` (``tls.ca_file``) as a trust root, or None for
    the system's trust store.  Raises L{ConfigError} naming ``tls.ca_file`` on any problem.
    """
    if ca_file is None:
        return None
    try:
        pem = ca_file.read_bytes()
        certificates = x509.load_pem_x509_certificates(pem)
    except OSError as e:
        raise ConfigError("tls.ca_file", f"cannot read {e.filename}: {e.strerror}") from None
    except ValueError as e:
        raise ConfigError("tls.ca_file", f"no PEM certificate in {ca_file}: {e}") from None
    root: IOpenSSLTrustRoot = ssl.trustRootFromCertificates(
        [ssl.Certificate.loadPEM(c.public_bytes(serialization.Encoding.PEM)) for c in certificates]
    )
    return root

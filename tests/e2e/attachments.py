"""What the e2e tests attach to mail."""

from __future__ import annotations


def every_byte_pdf(copies: int) -> bytes:
    """A small PDF whose body holds every byte value ``copies`` times, so any
    transfer-encoding slip shows."""
    binary = bytes(range(256)) * copies
    return (
        b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Length " + str(len(binary)).encode()
        + b" >>\nstream\n" + binary + b"\nendstream\nendobj\ntrailer\n<< >>\n%%EOF\n"
    )  # fmt: skip

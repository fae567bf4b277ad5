"""PEM material and file paths: decoding inline values, resolving `*_file` paths.

Inline values follow Pomerium: base64 of the PEM text, so that a certificate fits
in one environment variable. Files are only named here; load.py reads them.
"""

from __future__ import annotations

import enum
import os
import re
from typing import Any

from shared.config.errors import FieldError
from shared.config.fields import decode_base64, kind_of, parse_str
from shared.config.model import Source


class PemKind(enum.Enum):
    CERT = "certificate"
    KEY = "private key"
    # Blocks labelled X509 CRL (RFC 7468 section 6), one per issuing CA.
    CRL = "certificate revocation list"


_PEM_LABEL = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")


def check_pem(data: bytes, kind: PemKind) -> bytes:
    """Catch the classic swap of certificate and key files here rather than at TLS setup."""
    labels = [label.decode("ascii") for label in _PEM_LABEL.findall(data)]
    if not labels:
        raise FieldError("holds no PEM data (expected -----BEGIN ...-----)")
    if kind is PemKind.CERT and "CERTIFICATE" not in labels:
        raise FieldError(f"holds no PEM certificate (found {', '.join(labels)})")
    if kind is PemKind.KEY and not any(label.endswith("PRIVATE KEY") for label in labels):
        raise FieldError(f"holds no PEM private key (found {', '.join(labels)})")
    if kind is PemKind.CRL:
        _check_crl_labels(labels)
    return data


def _check_crl_labels(labels: list[str]) -> None:
    # A CA certificate or a key in the CRL's place is a mix-up of files, and a key
    # does not belong in a file that is often published: refuse rather than skip them.
    others = sorted({label for label in labels if label != "X509 CRL"})
    if "X509 CRL" not in labels:
        raise FieldError(
            f"holds no PEM CRL (expected -----BEGIN X509 CRL-----, found {', '.join(others)})"
        )
    if others:
        raise FieldError(
            f"holds {', '.join(others)} besides the CRLs; give a file of X509 CRL blocks only"
        )


def _pem_from_base64(text: str) -> bytes | None:
    try:
        data = decode_base64(text)
    except FieldError:
        return None
    return data if _PEM_LABEL.search(data) else None


def decode_inline_pem(value: Any, kind: PemKind, file_key: str) -> bytes:
    # The value may be a private key: messages say what is wrong, never what it was.
    hint = f"(use {file_key} for a path)"
    if not isinstance(value, str):
        raise FieldError(f"expected base64-encoded PEM, got {kind_of(value)} {hint}")
    if value.lstrip().startswith("-----BEGIN"):
        # Raw PEM in a YAML block scalar is unambiguous, so it is accepted too.
        return check_pem(value.encode(), kind)
    data = _pem_from_base64(value)
    if data is None:
        raise FieldError(f"not base64-encoded PEM {hint}")
    return check_pem(data, kind)


def resolve_path(value: Any, base_dir: str, home: str | None) -> str:
    """Expand `~` and anchor relative paths at the config file's directory."""
    text = parse_str(value).strip()
    if not text:
        raise FieldError("must not be empty")
    if text == "~" or text.startswith("~/"):
        # HOME comes from the environment mapping given to the parser, not os.environ.
        if not home:
            raise FieldError("cannot expand ~: HOME is not set")
        text = home + text[1:]
    elif text.startswith("~"):
        # ~user comes from the password database, which is not the environment.
        text = os.path.expanduser(text)
    return os.path.normpath(os.path.join(base_dir, text))


def parse_cert_or_path(value: Any, kind: PemKind, base_dir: str, home: str | None) -> Source:
    """An entry of `certificates`: inline base64 PEM if it decodes to PEM, else a path."""
    text = parse_str(value)
    if text.lstrip().startswith("-----BEGIN"):
        return Source(None, check_pem(text.encode(), kind))
    data = _pem_from_base64(text)
    if data is not None:
        return Source(None, check_pem(data, kind))
    return Source(resolve_path(text, base_dir, home), None)

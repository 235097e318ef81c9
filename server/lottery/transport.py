"""Transport security: the central's TLS context and the identity a verified peer carries.

The context is built once, at start, from the configured PEM files (TLS_CA, TLS_CERT, TLS_KEY)
and checked then, so a missing, unreadable or mismatched file stops the central with one line
naming its key instead of failing every handshake later. It speaks TLS 1.3 only and requires a
client certificate signed by the project CA (mutual TLS, as PostgreSQL and Kafka do it).

An agency's identity is the verified certificate's subject common name, ``agency-<N>``; it is
never taken from what the peer writes in a message (handler.py checks each message against it).
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

_AGENCY_NAME = re.compile(r"agency-([1-9][0-9]{0,9})")


class TLSConfigError(Exception):
    """A TLS file is missing, unreadable or does not match; `key` names the configuration key."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def _readable(key: str, path: Path) -> None:
    try:
        with open(path, "rb") as file:
            if b"-----BEGIN " not in file.read(1 << 16):
                raise TLSConfigError(key, f"{path} holds no PEM block")
    except OSError as err:
        raise TLSConfigError(key, f"cannot read {path}: {err.strerror or err}") from None


def server_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """The central's TLS 1.3 server context, requiring a client certificate signed by `ca`.

    Raises TLSConfigError naming TLS_CA, TLS_CERT or TLS_KEY."""
    for name, path in (("TLS_CA", ca), ("TLS_CERT", cert), ("TLS_KEY", key)):
        _readable(name, path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.verify_mode = ssl.CERT_REQUIRED
    # No session tickets: an agency keeps one connection and never resumes a session (its
    # tls.Config has no session cache), so each ticket would be encrypted and sent for nothing.
    context.num_tickets = 0
    try:
        context.load_verify_locations(cafile=str(ca))
    except ssl.SSLError as err:
        raise TLSConfigError("TLS_CA", f"{ca} is not a CA certificate: {err.reason or err}") from None
    _load_pair(context, cert, key)
    _check_signed_by(ca, cert, key)
    return context


def _load_pair(context: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    except ssl.SSLError as err:
        if "KEY_VALUES_MISMATCH" in str(err) or err.reason == "KEY_VALUES_MISMATCH":
            raise TLSConfigError("TLS_KEY", f"{key} is not the key of {cert}") from None
        raise TLSConfigError("TLS_CERT", f"cannot load {cert} with {key}: {err.reason or err}") from None


def _check_signed_by(ca: Path, cert: Path, key: Path) -> None:
    """Verify the central's certificate against the CA with a TLS handshake in memory, the same
    check its agencies will make (the standard library has no other chain verifier)."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(certfile=str(cert), keyfile=str(key))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False  # the names are the agencies' concern (tls.serverName)
    client.load_verify_locations(cafile=str(ca))
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server_side = server.wrap_bio(to_server, to_client, server_side=True)
    client_side = client.wrap_bio(to_client, to_server, server_side=False)
    done = {server_side: False, client_side: False}
    for _ in range(10):  # a TLS 1.3 handshake takes two round trips
        for side in done:
            if done[side]:
                continue
            try:
                side.do_handshake()
                done[side] = True
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as err:
                raise TLSConfigError(
                    "TLS_CERT", f"{cert} is not signed by the CA in {ca}: {err.verify_message}"
                ) from None
        if all(done.values()):
            return
    raise TLSConfigError("TLS_CERT", f"{cert}: the check handshake did not complete")


def agency_of(certificate: dict[str, Any] | None) -> int | None:
    """The agency number in a verified peer certificate (``getpeercert()``), or None when its
    subject common name is not ``agency-<N>``."""
    if not certificate:
        return None
    for rdn in certificate.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                match = _AGENCY_NAME.fullmatch(value)
                return int(match.group(1)) if match else None
    return None

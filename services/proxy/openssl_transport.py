"""TLS through pyOpenSSL memory BIOs, as an asyncio transport for the HTTP protocol.

Used only for hosts that ask for client certificates: their verify callback must let
an untrusted, expired or revoked certificate finish the handshake so that the user
gets a 495 page saying which (the stdlib `ssl` module has no verify callback), or
must refuse it in the handshake (`reject_connection`). Every other host keeps the
event loop's own TLS, which costs less per byte.

Layering: the event loop's plain TCP transport below, `OpenSSLTransport` in the
middle (an asyncio.Protocol to the socket, an asyncio.Transport to the app), the
app's protocol (HttpConnection) above. The app only starts once the handshake is
done, so it always sees the verdict on the client certificate.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

from OpenSSL import SSL

from shared.material import KeyPair
from shared.pki import load_certificates, load_private_key

log = logging.getLogger("vallum.proxy.tls")

HANDSHAKE_TIMEOUT = 10.0
READ_SIZE = 64 * 1024
FLUSH_SIZE = 256 * 1024


class OpenSSLTransport(asyncio.Protocol):
    """One TLS connection: decrypts into `app`, encrypts what `app` writes."""

    def __init__(
        self,
        conn: SSL.Connection,
        app_factory: Callable[[], asyncio.Protocol],
        on_handshake: Callable[[SSL.Connection], dict[str, Any]],
        on_failure: Callable[[SSL.Connection, Exception], None],
    ) -> None:
        self._conn = conn
        self._app_factory = app_factory
        self._on_handshake = on_handshake
        self._on_failure = on_failure
        self._raw: asyncio.Transport | None = None
        self._app: asyncio.Protocol | None = None
        self._extra: dict[str, Any] = {}
        self._reading = True
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None

    # -- below: the socket ----------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._raw = cast(asyncio.Transport, transport)
        self._extra = {"peername": transport.get_extra_info("peername")}
        self._timer = asyncio.get_running_loop().call_later(
            HANDSHAKE_TIMEOUT, self._handshake_timed_out
        )
        self._conn.set_accept_state()

    def data_received(self, data: bytes) -> None:
        self._conn.bio_write(data)
        if self._app is None:
            self._handshake()
        if self._app is not None:
            self._deliver()

    def eof_received(self) -> bool | None:
        # A TLS peer ends with close_notify; a bare EOF ends the connection just as well.
        if self._app is not None:
            self._deliver()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        if self._app is not None:
            self._app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._app is not None:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app is not None:
            self._app.resume_writing()

    def _handshake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._flush()
            return
        except SSL.Error as e:
            self._flush()  # the alert, if OpenSSL made one
            self._on_failure(self._conn, e)
            self._close_raw()
            return
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._extra.update(self._on_handshake(self._conn))
        self._app = self._app_factory()
        # Duck-typed: it has every Transport method HttpConnection calls.
        self._app.connection_made(cast(asyncio.Transport, self))

    def _handshake_timed_out(self) -> None:
        self._timer = None
        if self._app is None:
            self._on_failure(self._conn, TimeoutError("no TLS handshake in time"))
            self.abort()

    def _deliver(self) -> None:
        """Hand the app every byte OpenSSL has decrypted, unless it paused reading."""
        app = self._app
        assert app is not None
        while self._reading and not self._closing:
            try:
                data = self._conn.recv(READ_SIZE)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:  # close_notify
                self._flush()
                self.close()
                return
            except SSL.Error as e:
                log.debug("TLS error from %s: %s", self._extra.get("peername"), e)
                self.abort()
                return
            app.data_received(data)
        self._flush()

    def _flush(self) -> None:
        if self._raw is None:
            return
        chunks = []
        while True:
            try:
                chunk = self._conn.bio_read(FLUSH_SIZE)
            except SSL.WantReadError:
                break
            chunks.append(chunk)
            if len(chunk) < FLUSH_SIZE:
                break  # the BIO is empty: no need for the exception that would say so
        if chunks and not self._raw.is_closing():
            self._raw.write(b"".join(chunks))

    def _close_raw(self) -> None:
        self._closing = True
        if self._raw is not None and not self._raw.is_closing():
            self._raw.close()

    # -- above: the app ---------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._extra.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        try:
            self._conn.sendall(bytes(data))
        except SSL.Error as e:
            log.debug("TLS write to %s failed: %s", self._extra.get("peername"), e)
            self.abort()
            return
        self._flush()

    def writelines(self, lines: Any) -> None:
        self.write(b"".join(lines))

    def is_closing(self) -> bool:
        return self._closing or self._raw is None or self._raw.is_closing()

    def close(self) -> None:
        if self._closing:
            return
        with contextlib.suppress(SSL.Error):
            self._conn.shutdown()  # close_notify, RFC 8446 section 6.1
        self._flush()
        self._close_raw()

    def abort(self) -> None:
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    def pause_reading(self) -> None:
        if self._reading and self._raw is not None:
            self._reading = False
            self._raw.pause_reading()

    def resume_reading(self) -> None:
        if not self._reading and self._raw is not None and not self._closing:
            self._reading = True
            self._raw.resume_reading()
            if self._app is not None:
                # Bytes decrypted while paused are waiting inside OpenSSL.
                asyncio.get_running_loop().call_soon(self._deliver_if_open)

    def _deliver_if_open(self) -> None:
        if self._app is not None and not self._closing:
            self._deliver()

    def can_write_eof(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size() if self._raw is not None else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)


def server_context(pair: KeyPair, session_id: bytes) -> SSL.Context:
    """A pyOpenSSL server context presenting `pair`, as the loop's contexts are set up:
    TLS 1.2+, ALPN http/1.1. Resumption is off: on client-certificate hosts a resumed
    session would skip the verify callback, and a stapled response must be fresh."""
    ctx = SSL.Context(SSL.TLS_SERVER_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_2_VERSION)
    ctx.set_options(SSL.OP_NO_TICKET | SSL.OP_NO_RENEGOTIATION | SSL.OP_NO_COMPRESSION)
    ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    # OpenSSL refuses a verifying server without a session id context, even uncached.
    ctx.set_session_id(session_id[:32])
    chain = load_certificates(pair.cert_pem)
    ctx.use_certificate(chain[0])
    for extra in chain[1:]:
        ctx.add_extra_chain_cert(extra)
    ctx.use_privatekey(load_private_key(pair.key_pem))
    ctx.set_alpn_select_callback(_alpn)
    return ctx


def server_name_info(conn: SSL.Connection) -> dict[str, Any]:
    """Extra info for the HTTP protocol of a connection without client certificates."""
    name = conn.get_servername()
    return {"vallum_sni": name.decode("ascii").lower() if name else None, "vallum_tls": True}


def _alpn(conn: SSL.Connection, offered: list[bytes]) -> bytes:
    return b"http/1.1" if b"http/1.1" in offered else SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]

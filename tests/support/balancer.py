"""A round-robin TCP load balancer for tests: TLS passes through as raw bytes.

    with Balancer([("127.0.1.4", 8443), ("127.0.1.5", 8443)]) as lb:
        lb.port                  # where clients connect (127.0.0.1 unless told)
        lb.connections()         # backend -> connections forwarded to it
        lb.remove(backend); lb.add(backend)

It runs its own event loop in a daemon thread, so sync tests and async tests (whose
loop it must not block) use it alike. Each new client connection goes to the next
backend in turn. A backend whose connect fails (refused, or no answer within
`connect_timeout`) is passed over for the next one: that is the one retry a TCP
balancer can make, as nothing has been sent yet. Once a connection is forwarded its
bytes are the client's and the backend's: a backend that resets it resets the client
too (the balancer aborts the client side), and a half-close is passed on.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import Counter
from collections.abc import Iterable
from types import TracebackType

Backend = tuple[str, int]

CHUNK = 64 * 1024


class Balancer:
    def __init__(
        self,
        backends: Iterable[Backend],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        connect_timeout: float = 1.0,
    ) -> None:
        self._backends: list[Backend] = list(backends)
        self._lock = threading.Lock()
        self._next = 0
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._forwarded: Counter[Backend] = Counter()
        self._refused: Counter[Backend] = Counter()
        self._unserved = 0  # client connections closed because no backend answered
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> Balancer:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._listen(), self._loop)
        self._server = future.result(10)
        sockname = self._server.sockets[0].getsockname()
        self._host, self._port = sockname[0], sockname[1]
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> Balancer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what tests read and change ---------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        return self._port

    @property
    def backends(self) -> list[Backend]:
        with self._lock:
            return list(self._backends)

    def add(self, backend: Backend) -> None:
        with self._lock:
            if backend not in self._backends:
                self._backends.append(backend)

    def remove(self, backend: Backend) -> None:
        """New connections no longer go there; open ones stay as they are."""
        with self._lock:
            if backend in self._backends:
                self._backends.remove(backend)

    def connections(self) -> dict[Backend, int]:
        """Client connections forwarded to each backend so far."""
        with self._lock:
            return dict(self._forwarded)

    def refused(self) -> dict[Backend, int]:
        """Connect attempts that failed, per backend (each was retried on the next)."""
        with self._lock:
            return dict(self._refused)

    @property
    def unserved(self) -> int:
        """Client connections closed because no backend accepted them."""
        with self._lock:
            return self._unserved

    # -- the event loop's side --------------------------------------------------------

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, self._host, self._port, backlog=512)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def _order(self) -> list[Backend]:
        """Every backend once, starting with the next one in turn."""
        with self._lock:
            backends = list(self._backends)
            if not backends:
                return []
            start = self._next % len(backends)
            self._next = start + 1
        return backends[start:] + backends[:start]

    async def _connect(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        for backend in self._order():
            try:
                streams = await asyncio.wait_for(
                    asyncio.open_connection(*backend), self._connect_timeout
                )
            except (OSError, TimeoutError):
                with self._lock:
                    self._refused[backend] += 1
                continue
            with self._lock:
                self._forwarded[backend] += 1
            return streams
        return None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._pipes.add(task)
        try:
            upstream = await self._connect()
            if upstream is None:
                with self._lock:
                    self._unserved += 1
                _abort(writer)
                return
            up_reader, up_writer = upstream
            await asyncio.gather(
                _pipe(reader, up_writer, writer), _pipe(up_reader, writer, up_writer)
            )
            for w in (writer, up_writer):
                w.close()
        except asyncio.CancelledError:
            _abort(writer)  # the balancer is stopping: this task is its own, end it quietly
        finally:
            self._pipes.discard(task)


async def _pipe(
    source: asyncio.StreamReader, sink: asyncio.StreamWriter, source_writer: asyncio.StreamWriter
) -> None:
    """Copy until EOF (then half-close the sink) or a reset (then reset both sides)."""
    try:
        while data := await source.read(CHUNK):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof() and not sink.is_closing():
            sink.write_eof()
    except (ConnectionError, OSError):
        # One side reset: the other must see a reset too, not a clean end of stream,
        # or a client could take a cut-off response for a whole one.
        _abort(sink)
        _abort(source_writer)
    except asyncio.CancelledError:
        _abort(sink)
        _abort(source_writer)
        raise


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0), as a crashed peer's kernel would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()

"""Length-prefixed messages on a byte stream: a 4-byte big-endian length, then that
many bytes. The check channel carries protobuf messages this way (one message, one
frame), as gRPC does inside HTTP/2 DATA frames, without HTTP/2 around them.

Pure: no I/O. A frame longer than the reader's limit is an error, not a buffer that
grows without bound.
"""

from __future__ import annotations

import struct

_LENGTH = struct.Struct(">I")
HEADER = _LENGTH.size
# A batch of 512 checks with long URLs and cookies-free headers is well under this.
MAX_FRAME = 8 * 1024 * 1024


class FrameError(Exception):
    """The stream does not follow the framing: the connection must be dropped."""


def frame(message: bytes) -> bytes:
    if len(message) > MAX_FRAME:
        raise FrameError(f"message of {len(message)} bytes exceeds {MAX_FRAME}")
    return _LENGTH.pack(len(message)) + message


class FrameReader:
    """Bytes in, whole messages out, in order."""

    __slots__ = ("_buffer", "_limit")

    def __init__(self, limit: int = MAX_FRAME) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[bytes]:
        buffer = self._buffer
        buffer += data
        messages = []
        start = 0
        while len(buffer) - start >= HEADER:
            (size,) = _LENGTH.unpack_from(buffer, start)
            if size > self._limit:
                raise FrameError(f"frame of {size} bytes announced; the limit is {self._limit}")
            end = start + HEADER + size
            if len(buffer) < end:
                break
            messages.append(bytes(buffer[start + HEADER : end]))
            start = end
        if start:
            del buffer[:start]
        return messages

    @property
    def pending(self) -> int:
        """Bytes received that are not a whole message yet."""
        return len(self._buffer)

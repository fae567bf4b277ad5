"""Length-prefixed framing: whole messages out whatever the chunking, limits enforced."""

from __future__ import annotations

import pytest

from shared.frames import FrameError, FrameReader, frame


def test_messages_come_out_whole_and_in_order_however_the_bytes_arrive() -> None:
    messages = [b"", b"a", b"hello world", bytes(range(256)) * 40]
    wire = b"".join(frame(m) for m in messages)
    for step in (1, 3, 7, 1000, len(wire)):
        reader = FrameReader()
        out: list[bytes] = []
        for i in range(0, len(wire), step):
            out += reader.feed(wire[i : i + step])
        assert out == messages
        assert reader.pending == 0


def test_a_partial_frame_waits_for_the_rest() -> None:
    reader = FrameReader()
    wire = frame(b"abcdef")
    assert reader.feed(wire[:5]) == []
    assert reader.pending == 5
    assert reader.feed(wire[5:]) == [b"abcdef"]


def test_an_announced_length_over_the_limit_is_an_error_before_any_body() -> None:
    reader = FrameReader(limit=16)
    with pytest.raises(FrameError, match="limit is 16"):
        reader.feed((17).to_bytes(4, "big"))


def test_a_message_over_the_limit_cannot_be_framed() -> None:
    with pytest.raises(FrameError):
        frame(b"x" * (8 * 1024 * 1024 + 1))

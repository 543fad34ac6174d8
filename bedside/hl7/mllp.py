"""MLLP, the Minimal Lower Layer Protocol that carries HL7 v2 on TCP: 0x0B, message, 0x1C 0x0D.

Messages are UTF-8 (MSH-18 "UNICODE UTF-8"). :class:`MllpDecoder` turns a byte stream into
messages and refuses garbage between frames and frames over ``max_bytes``; ``read_message`` /
``write_message`` do the same on asyncio streams.
"""

from __future__ import annotations

import asyncio

from bedside.errors import BedsideError

START = b"\x0b"
END = b"\x1c\x0d"
#: Largest message accepted (bytes); a bed's messages are under 4 kB.
MAX_MESSAGE_BYTES = 1 << 20


class MllpError(BedsideError):
    """Bytes that are not MLLP frames (garbage between frames, a frame too large, not UTF-8)."""


def frame(msg: str) -> bytes:
    """One MLLP frame for an ER7 message (segments joined by CR)."""
    return START + msg.encode("utf-8") + END


class MllpDecoder:
    """Feed it bytes as they arrive; it returns the complete messages (ER7 text) in them."""

    def __init__(self, max_bytes: int = MAX_MESSAGE_BYTES):
        self.max_bytes = max_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        out: list[str] = []
        while self._buf:
            if self._buf[0:1] != START:
                # whitespace between frames is tolerated (some senders add a LF), anything else is not
                stripped = self._buf.lstrip(b"\r\n")
                if len(stripped) != len(self._buf):
                    del self._buf[:len(self._buf) - len(stripped)]
                    continue
                bad = bytes(self._buf[:16])
                self._buf.clear()
                raise MllpError(f"{bad!r}: bytes outside an MLLP frame (expected 0x0B to start a message)")
            end = self._buf.find(END)
            if end < 0:
                if len(self._buf) > self.max_bytes + 1:
                    self._buf.clear()
                    raise MllpError(f"MLLP frame longer than {self.max_bytes} bytes without its end (0x1C 0x0D)")
                break
            body = bytes(self._buf[1:end])
            del self._buf[:end + len(END)]
            if len(body) > self.max_bytes:
                raise MllpError(f"MLLP message of {len(body)} bytes, more than {self.max_bytes}")
            if START in body:
                raise MllpError("MLLP frame holds a second start byte (0x0B): a frame was cut off")
            try:
                out.append(body.decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise MllpError(f"MLLP message is not UTF-8: {exc}") from exc
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held."""
        return len(self._buf)


async def read_message(reader: asyncio.StreamReader, max_bytes: int = MAX_MESSAGE_BYTES) -> str | None:
    """The next message on ``reader``; None at a clean end of stream (between frames).

    Raises :class:`MllpError` for garbage or an oversized frame, ``asyncio.IncompleteReadError`` if the
    stream ends inside a frame."""
    first = await reader.read(1)
    while first in (b"\r", b"\n"):
        first = await reader.read(1)
    if not first:
        return None
    if first != START:
        raise MllpError(f"{first!r}: byte outside an MLLP frame (expected 0x0B to start a message)")
    try:
        body = await reader.readuntil(END)
    except asyncio.LimitOverrunError as exc:
        raise MllpError(f"MLLP frame longer than the stream's buffer limit ({exc.consumed} bytes)") from exc
    body = body[:-len(END)]
    if len(body) > max_bytes:
        raise MllpError(f"MLLP message of {len(body)} bytes, more than {max_bytes}")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MllpError(f"MLLP message is not UTF-8: {exc}") from exc


async def write_message(writer: asyncio.StreamWriter, msg: str) -> None:
    writer.write(frame(msg))
    await writer.drain()

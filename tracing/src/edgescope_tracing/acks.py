"""Ingest acknowledgements: what the collector tells a producer it has stored.

A producer (the SDK) streams a trace to the collector's ingest socket; the collector writes
back, on the same connection, messages of ``ACK_SIZE`` bytes: ``ACK_MAGIC`` and a u64
little-endian stream offset, the end of the last frame whose records are stored (written to
the segment file). Offsets count every byte of the producer's stream, header included, and
never go down. The spec is ``docs/wire-protocol.md`` ("Ingest acknowledgements").
"""

from __future__ import annotations

__all__ = ["ACK_MAGIC", "ACK_SIZE", "ack_message", "parse_acks"]

ACK_MAGIC = b"ESAK"
"""The first 4 bytes of an acknowledgement."""
ACK_SIZE = 12
"""Bytes of one acknowledgement: ``ACK_MAGIC``, then the offset (u64 little-endian)."""


def ack_message(offset: int) -> bytes:
    """The acknowledgement that every frame before stream byte ``offset`` is stored."""
    return ACK_MAGIC + offset.to_bytes(8, "little")


def parse_acks(buf: bytearray) -> int | None:
    """The highest offset in the whole messages at the start of ``buf`` (consumed from it).

    None if there was none; ``ValueError`` if the bytes are not acknowledgements.
    """
    best: int | None = None
    whole = len(buf) - len(buf) % ACK_SIZE
    for at in range(0, whole, ACK_SIZE):
        if buf[at : at + 4] != ACK_MAGIC:
            raise ValueError("bytes that are not acknowledgements")
        offset = int.from_bytes(buf[at + 4 : at + ACK_SIZE], "little")
        best = offset if best is None else max(best, offset)
    del buf[:whole]
    return best

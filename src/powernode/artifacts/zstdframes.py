"""Following zstd frame and block headers, to tell a whole zstd stream from a cut one.

libzstd's streaming reader (and so `zstandard`'s) takes an early end of input for the end of
the data, so a layer cut anywhere, even in its final checksum, would read as a shorter valid
one. `FrameTracker` sees the compressed bytes go by and knows whether they stop on a frame
boundary. Standard library only: the agent's layer reader uses it.
"""

from __future__ import annotations


class FrameTracker:
    """Follows one stream's frame and block headers, fed in any pieces."""

    def __init__(self) -> None:
        self.header = bytearray()
        self.need = 4  # header bytes wanted in the current state
        self.skip = 0  # payload bytes to pass over before the next header
        self.state = "magic"
        self.checksum = False
        self.frames = 0

    def complete(self) -> bool:
        """Whether the bytes so far end exactly at the end of a (non-skippable) frame."""
        return self.frames > 0 and self.state == "magic" and not self.header and not self.skip

    def feed(self, data: bytes) -> None:
        """Follow `data`, the next bytes of the stream; ValueError if it is not zstd."""
        view, i = memoryview(data), 0
        while i < len(view):
            if self.skip:
                step = min(self.skip, len(view) - i)
                self.skip -= step
                i += step
                if not self.skip and self.state == "end":
                    self._to_magic()
                continue
            take = min(self.need - len(self.header), len(view) - i)
            self.header += view[i : i + take]
            i += take
            if len(self.header) == self.need:
                header = bytes(self.header)
                self.header.clear()
                self._advance(header)

    def _to_magic(self) -> None:
        self.state, self.need = "magic", 4
        self.frames += 1

    def _advance(self, header: bytes) -> None:
        value = int.from_bytes(header, "little")
        if self.state == "magic":
            if value == 0xFD2FB528:
                self.state, self.need = "descriptor", 1
            elif value & 0xFFFFFFF0 == 0x184D2A50:
                self.state, self.need = "skippable", 4
            else:
                raise ValueError("the layer is not a zstd stream")
        elif self.state == "skippable":
            self.skip, self.state, self.need = value, "magic", 4
        elif self.state == "descriptor":
            fcs_flag, single, dict_flag = value >> 6, value >> 5 & 1, value & 3
            self.checksum = bool(value >> 2 & 1)
            fcs = (1 if single else 0, 2, 4, 8)[fcs_flag]
            self.skip = (0 if single else 1) + (0, 1, 2, 4)[dict_flag] + fcs
            self.state, self.need = "block", 3
        elif self.state == "block":
            last, kind, size = value & 1, value >> 1 & 3, value >> 3
            if kind == 3:
                raise ValueError("the zstd stream has a reserved block type")
            self.skip = 1 if kind == 1 else size
            if last:
                self.skip += 4 if self.checksum else 0
                self.state = "end"
        if self.state == "end" and not self.skip:
            self._to_magic()

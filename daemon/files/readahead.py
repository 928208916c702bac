"""Reading a data file ahead on a thread: gzip is inflated on another core while the caller
parses what came before (zlib and file reads release the GIL). Standard library only, so the
CLI can start it before it imports pandas and SQLAlchemy.
"""

from __future__ import annotations

import io
import queue
import threading
import zlib
from pathlib import Path

BLOCK = 1 << 20  # compressed bytes read at a time
DEPTH = 16  # decompressed blocks held ahead of the reader at most


class ReadAhead(io.RawIOBase):
    """A binary stream of a file's contents (decompressed when the name ends in .gz),
    produced by a thread. Errors of the thread (OSError, a damaged gzip stream) are raised
    by `read` in the caller's thread, where the file would have raised them.

    `consumed` is how many bytes of the file on disk the reader has reached (progress).
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = Path(path)
        self.size = self.path.stat().st_size
        self.consumed = 0
        self._gz = self.path.name.endswith(".gz")
        self._q: queue.Queue[tuple[bytes, int] | BaseException | None] = queue.Queue(DEPTH)
        self._stop = threading.Event()
        self._buf = memoryview(b"")
        self._eof = False
        self._thread = threading.Thread(target=self._produce, name="readahead", daemon=True)
        self._thread.start()

    def _put(self, item: tuple[bytes, int] | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            with open(self.path, "rb") as f:
                d = zlib.decompressobj(wbits=31) if self._gz else None
                pos = 0
                while not self._stop.is_set():
                    block = f.read(BLOCK)
                    pos += len(block)
                    if d is None:
                        if not block:
                            break
                        self._put((block, pos))
                        continue
                    if not block:
                        if not d.eof:
                            raise EOFError("Compressed file ended before the end-of-stream "
                                           "marker was reached")
                        break
                    data = d.decompress(block)
                    while d.eof and d.unused_data:  # concatenated gzip members
                        rest = d.unused_data
                        d = zlib.decompressobj(wbits=31)
                        data += d.decompress(rest)
                    if data:
                        self._put((data, pos))
            self._put(None)
        except (OSError, EOFError, zlib.error) as e:
            self._put(e if not isinstance(e, zlib.error) else OSError(f"bad gzip data: {e}"))

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        while not len(self._buf):
            if self._eof:
                return 0
            item = self._q.get()
            if item is None:
                self._eof = True
                return 0
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            self._buf = memoryview(item[0])
            self.consumed = item[1]
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._stop.set()
        super().close()


def open_ahead(path: Path) -> io.BufferedReader:
    """A buffered binary reader over `ReadAhead(path)` (readline, read, iteration)."""
    return io.BufferedReader(ReadAhead(path), buffer_size=BLOCK)


def prefetch(path: str) -> io.BufferedReader | None:
    """`open_ahead` for a path that may not be a readable file (then None: the command
    names the problem when it checks its arguments)."""
    try:
        return open_ahead(Path(path)) if Path(path).is_file() else None
    except OSError:
        return None

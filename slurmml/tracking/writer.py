"""The single writer of one run's spool file (format: slurmml.tracking.spool).

`write(record)` is the hot path of `slurmml.log()`: it only appends the record to an in-memory
queue (a deque append is atomic, so threads need no lock). Records are JSON-encoded when they are
flushed: by a daemon thread every `interval_s` (0.5 s), by `flush()`/`close()`, at interpreter exit
and on SIGTERM. A flush writes everything buffered with one `os.write` on an O_APPEND descriptor,
so a kill -9 tears at most the last line, which readers leave for later.

A writer owns its records: don't mutate a record after passing it to `write`.
I/O errors never reach user code: the first one is reported on stderr, and unwritten bytes are
kept (up to MAX_PENDING_BYTES) and retried at the next flush.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import threading
import weakref
from collections import deque
from pathlib import Path
from typing import Any, Optional, Union

from slurmml.tracking.notices import Notices

MAX_PENDING_BYTES = 64 * 1024 * 1024
MAX_BUFFERED_RECORDS = 20_000  # about 10 MB of records; the flush thread keeps far below it in normal use
SIGNAL_FLUSH_WAIT_S = 5.0

# The same encoding as slurmml.tracking.spool.encode, without building an encoder per record.
_ENCODER = json.JSONEncoder(separators=(",", ":"), default=str, allow_nan=True)

_writers: "weakref.WeakSet[SpoolWriter]" = weakref.WeakSet()
_hooks_lock = threading.Lock()
_atexit_registered = False
_sigterm_installed = False
_previous_sigterm: Any = None


class SpoolWriter:
    def __init__(self, path: Union[str, os.PathLike], interval_s: float = 0.5, handle_sigterm: bool = True,
                 max_buffered: int = MAX_BUFFERED_RECORDS) -> None:
        self.path = Path(path)
        self.interval_s = interval_s
        self.max_buffered = max_buffered
        self._queue: deque = deque()
        self._lock = threading.Lock()  # one flush at a time, in record order
        self._lock_owner: Optional[int] = None
        self._fd: Optional[int] = None
        self._pending = b""  # bytes a failed or partial write left behind
        self._notices = Notices()
        self._closed = False
        self._pid = os.getpid()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="slurmml-spool-flush", daemon=True)
        self._thread.start()
        _register(self, handle_sigterm)

    def write(self, record: dict[str, Any]) -> None:
        """Buffer one record (a dict with "k" and "t"); cheap and thread-safe (a deque append is atomic).

        A producer faster than the flush thread can encode (a tight loop logging at a few hundred
        thousand records per second) flushes itself once `max_buffered` records wait: memory stays bounded.
        """
        queue = self._queue
        queue.append(record)
        if len(queue) > self.max_buffered:
            self.flush()

    def flush(self) -> bool:
        """Write everything buffered; False if something could not be written (reported once on stderr)."""
        if os.getpid() != self._pid:
            return False
        with self._lock:
            self._lock_owner = threading.get_ident()
            try:
                return self._flush_locked()
            finally:
                self._lock_owner = None

    def close(self) -> None:
        """Stop the flush thread and flush. Records written after close are written at once."""
        if self._closed:
            self.flush()
            return
        self._closed = True
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=max(1.0, 4 * self.interval_s))
        self.max_buffered = 0  # from now on every write flushes (and closes the file again)
        self.flush()
        if os.getpid() == self._pid:
            with self._lock:
                self._close_fd()

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "SpoolWriter":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    # internals

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.flush()
            except Exception as error:  # the flush thread must not die; flush() itself catches I/O errors
                self._report("flush", f"flush failed ({type(error).__name__}: {error})")

    def _flush_locked(self) -> bool:
        queue = self._queue
        count = len(queue)
        if not count and not self._pending:
            return True
        popleft = queue.popleft
        data = self._pending + self._encode([popleft() for _ in range(count)])
        self._pending = b""
        written = 0
        try:
            if self._fd is None:
                self._open()
            written = os.write(self._fd, data)  # type: ignore[arg-type]
            while written < len(data):  # a partial write (disk full, signal): finish the line if we can
                more = os.write(self._fd, memoryview(data)[written:])  # type: ignore[arg-type]
                if not more:
                    raise OSError(f"wrote {written} of {len(data)} bytes")
                written += more
        except OSError as error:
            self._keep(data[written:])
            self._report("write", f"cannot write {self.path} ({error}); will retry")
            self._close_fd()  # a stale NFS handle or a removed folder: open again next time
            return False
        if self._closed:
            self._close_fd()
        return True

    def _encode(self, records: list) -> bytes:
        encode = _ENCODER.encode
        lines = []
        for record in records:
            try:
                lines.append(encode(record))
            except (TypeError, ValueError, RecursionError) as error:
                self._report("encode", f"dropped a record that is not JSON-encodable ({error})")
        return ("\n".join(lines) + "\n").encode() if lines else b""

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)

    def _keep(self, data: bytes) -> None:
        if len(data) > MAX_PENDING_BYTES:
            self._report("drop", f"dropped {len(data)} unwritten bytes for {self.path} (more than {MAX_PENDING_BYTES})")
            data = b""
        self._pending = data

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def _report(self, kind: str, message: str) -> None:
        self._notices.say(kind, message)

    def _flush_from_signal(self) -> None:
        """Flush from a signal handler (main thread), which may have interrupted this thread's own flush."""
        if os.getpid() != self._pid or self._lock_owner == threading.get_ident():
            return
        if not self._lock.acquire(timeout=SIGNAL_FLUSH_WAIT_S):
            return
        try:
            self._flush_locked()
        finally:
            self._lock.release()

    def _after_fork_in_child(self) -> None:
        """A forked child is not the spool's writer: it drops what it inherited and what it logs."""
        self._queue.clear()
        self._pending = b""
        self._lock = threading.Lock()
        self._lock_owner = None
        self._fd = None  # the descriptor belongs to the parent; leave it alone
        self._closed = True
        self.write = self._write_in_child  # type: ignore[method-assign]

    def _write_in_child(self, record: dict[str, Any]) -> None:
        self._report("child", f"records logged in a child process (pid {os.getpid()}) are dropped: "
                     f"only the run's own process writes {self.path}")


def _close_all() -> None:
    for writer in list(_writers):
        try:
            writer.close()
        except Exception:  # at exit: never turn a clean exit into a traceback
            pass


def _on_sigterm(signum: int, frame: Any) -> None:
    for writer in list(_writers):
        try:
            writer._flush_from_signal()
        except Exception:
            pass
    previous = _previous_sigterm
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_IGN:
        return
    else:  # SIG_DFL, or a handler not installed from Python: die of SIGTERM as we would have
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def install_sigterm_handler() -> bool:
    """Flush all writers on SIGTERM, then behave as before. Only from the main thread; idempotent."""
    global _sigterm_installed, _previous_sigterm
    if _sigterm_installed:
        return True
    if threading.current_thread() is not threading.main_thread():
        return False
    try:
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main interpreter, or no SIGTERM here
        return False
    _previous_sigterm = previous
    _sigterm_installed = True
    return True


def _register(writer: SpoolWriter, handle_sigterm: bool) -> None:
    global _atexit_registered
    with _hooks_lock:
        _writers.add(writer)
        if not _atexit_registered:
            atexit.register(_close_all)
            _atexit_registered = True
    if handle_sigterm:
        install_sigterm_handler()


def _after_fork_in_child() -> None:
    global _hooks_lock
    _hooks_lock = threading.Lock()
    for writer in list(_writers):
        writer._after_fork_in_child()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)

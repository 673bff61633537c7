"""Files a user names on the command line: read only regular ones, write without surprises.

Every command that opens a path from a user (or a directory listing) goes through here:

- :func:`check_input`: before a trace is opened. A FIFO would block ``open`` until some writer
  came (a hang); a device or a socket is no trace. Each is refused in one sentence.
- :func:`read_regular`: a small file of settings (the devices file, an SSH config): opened
  without waiting (a FIFO would hang ``open``), read only when it is a regular file; anything
  else is :class:`NotRegularFileError`, an ``OSError`` that callers already word.
- :func:`open_output`: writing a file of results (``export -o``). A new name or a regular file
  is written through a temporary file beside it and renamed over it at the end, so a failed
  write leaves it as it was; the temporary is created with ``O_EXCL|O_NOFOLLOW``, synced before
  the rename, and the rename never goes through a symbolic link; a full disk (ENOSPC, EFBIG) is
  one sentence, with the temporary removed. A FIFO or a character device (``/dev/null``, a terminal,
  ``/dev/stdout``) is written *through*, never replaced; a FIFO with no reader is refused rather
  than waited for. A symbolic link to a regular file, a directory, a block device or a socket
  is refused. :func:`open_binary_output` is the same for bytes (``export --format parquet``).
- :func:`make_way`: before a file is created with ``O_EXCL`` that must be written in place
  (``record -o``, whose trace must survive a kill): refuses what :func:`open_output` refuses
  and FIFOs and devices too (a trace file is a regular file), and removes an old regular file.

Refusals raise :class:`OutputError` (an :class:`~edgescope_tracing.TraceError`), whose message
names the path and says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, BinaryIO, TextIO, cast

from .errors import NotATraceError, TraceError
from .text import escape

__all__ = [
    "NotRegularFileError",
    "OutputError",
    "check_input",
    "file_kind",
    "make_way",
    "open_binary_output",
    "open_output",
    "open_regular",
    "read_regular",
]


class OutputError(TraceError):
    """A path that a command will not write to, or could not."""


def file_kind(mode: int) -> str:
    """``"a FIFO"``, ``"a character device"``, ...: what a non-regular file is, in words."""
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISLNK, "a symbolic link"),
    ):
        if test(mode):
            return name
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def check_input(path: str | os.PathLike[str]) -> None:
    """Refuse a path to read a trace from that is not a regular file (symbolic links are
    followed). FileNotFoundError and PermissionError pass through for the caller to word."""
    mode = os.stat(path).st_mode
    # The same sentences as TraceReader's own check, which comes after open(): too late for a
    # FIFO, whose open() waits for a writer.
    if stat.S_ISDIR(mode):
        raise NotATraceError(f"{_show(path)} is a directory, not an edgescope trace")
    if not stat.S_ISREG(mode):
        raise NotATraceError(
            f"{_show(path)} is not a regular file (a pipe or a device); save the trace to a "
            "file to read it here"
        )


class NotRegularFileError(TraceError, OSError):
    """A path to read settings from that is a FIFO, a device, a socket or a directory: an
    ``OSError`` too, so that callers which word a failed open word this one the same way."""


def open_regular(path: str | os.PathLike[str], flags: int, *, follow: bool = True) -> int:
    """A descriptor of the regular file at ``path``, opened with ``flags`` (``os.O_RDONLY``,
    ``os.O_WRONLY``), never waiting: ``O_NONBLOCK`` while it opens, so that a FIFO is refused at
    once instead of waited on, and cleared after. ``follow=False`` refuses a symbolic link too
    (``O_NOFOLLOW``). Raises :class:`NotRegularFileError` for anything but a regular file, and
    OSError as ``open`` does."""
    extra = os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(path, flags | extra)
    except OSError as e:
        # O_NOFOLLOW's ELOOP, a FIFO nobody reads opened to write (ENXIO), a directory opened
        # to write (EISDIR): said as what is there
        try:
            mode = (os.stat if follow else os.lstat)(path).st_mode
        except OSError:
            raise e from None
        if stat.S_ISREG(mode):
            raise
        raise NotRegularFileError(
            f"{_show(path)} is {file_kind(mode)}, not a regular file"
        ) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotRegularFileError(f"{_show(path)} is {file_kind(mode)}, not a regular file")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return fd


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The bytes of the regular file at ``path`` (symbolic links are followed), opened by
    :func:`open_regular`: :class:`NotRegularFileError` for anything but a regular file."""
    fd = open_regular(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _show(path: object) -> str:
    return escape(str(path))


def _why(e: OSError) -> str:
    return (e.strerror or str(e)).lower()


def _fdopen(fd: int, binary: bool) -> IO[Any]:
    if binary:
        return os.fdopen(fd, "wb")
    return os.fdopen(fd, "w", encoding="utf-8", newline="")


def _open_through(path: Path, binary: bool) -> IO[Any]:
    """Open a FIFO or character device for writing, without blocking and without creating."""
    flags = os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ENXIO:  # a FIFO that nobody has open for reading
            raise OutputError(
                f"{_show(path)} is a FIFO that no process is reading; start the reader first"
            ) from None
        raise OutputError(f"cannot write {_show(path)}: {_why(e)}") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISCHR(mode)):  # it changed since we looked
        os.close(fd)
        raise OutputError(f"{_show(path)} changed while it was being opened; try again")
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    return _fdopen(fd, binary)


def _refuse(path: Path, mode: int, link: bool) -> OutputError:
    if link:
        target = os.path.realpath(path)
        return OutputError(
            f"{_show(path)} is a symbolic link (to {_show(target)}); give the path of the file "
            "itself, or remove the link"
        )
    if stat.S_ISDIR(mode):
        return OutputError(f"{_show(path)} is a directory; give a file name")
    return OutputError(f"{_show(path)} is {file_kind(mode)}; refusing to write over it")


@contextlib.contextmanager
def open_output(
    path: str | os.PathLike[str], *, not_same_as: Path | None = None
) -> Iterator[TextIO]:
    """A text file to write ``path`` with (see the module's docstring for what each kind of
    path gets). ``not_same_as``: refuse when ``path`` is that file (an input)."""
    with _output(path, not_same_as, binary=False) as f:
        yield cast(TextIO, f)


@contextlib.contextmanager
def open_binary_output(
    path: str | os.PathLike[str], *, not_same_as: Path | None = None
) -> Iterator[BinaryIO]:
    """:func:`open_output` for bytes."""
    with _output(path, not_same_as, binary=True) as f:
        yield cast(BinaryIO, f)


@contextlib.contextmanager
def _output(
    path: str | os.PathLike[str], not_same_as: Path | None, binary: bool
) -> Iterator[IO[Any]]:
    dst = Path(path)
    try:
        st: os.stat_result | None = os.lstat(dst)
    except FileNotFoundError:
        st = None
    except OSError as e:
        raise OutputError(f"cannot write {_show(dst)}: {_why(e)}") from None
    if st is not None:
        link = stat.S_ISLNK(st.st_mode)
        target = st
        if link:
            try:
                target = os.stat(dst)
            except OSError:
                raise _refuse(dst, st.st_mode, True) from None
        if not_same_as is not None and not link and stat.S_ISREG(target.st_mode):
            with contextlib.suppress(OSError):
                if os.path.samefile(dst, not_same_as):
                    raise OutputError(f"{_show(dst)}: refusing to write over the input file")
        if stat.S_ISFIFO(target.st_mode) or stat.S_ISCHR(target.st_mode):
            f = _open_through(dst, binary)
            try:
                with f:
                    yield f
            except OSError as e:
                raise OutputError(f"writing {_show(dst)} failed: {_why(e)}") from None
            return
        if link or not stat.S_ISREG(target.st_mode):
            raise _refuse(dst, target.st_mode, link)
    yield from _replace(dst, st, binary)


def _replace(dst: Path, old: os.stat_result | None, binary: bool) -> Iterator[IO[Any]]:
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    mode = stat.S_IMODE(old.st_mode) if old is not None else 0o666
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, mode)
    except FileNotFoundError:
        raise OutputError(
            f"cannot write {_show(dst)}: the directory {_show(dst.parent)} does not exist"
        ) from None
    except FileExistsError:
        raise OutputError(
            f"cannot write {_show(dst)}: {_show(tmp)} is in the way; remove it"
        ) from None
    except OSError as e:
        raise OutputError(f"cannot write {_show(dst)}: {_why(e)}") from None
    try:
        try:
            if old is not None:
                os.fchmod(fd, mode)  # the umask narrowed it at creation
            with _fdopen(fd, binary) as f:
                yield f
                f.flush()
                os.fsync(f.fileno())  # before the rename: a power cut leaves old or new, whole
        except OSError as e:
            kept = "it was left as it was" if old is not None else "nothing was left there"
            raise OutputError(f"writing {_show(dst)} failed: {_why(e)}; {kept}") from None
        try:
            now = os.lstat(dst).st_mode
        except FileNotFoundError:
            now = None
        if now is not None and not stat.S_ISREG(now):
            raise _refuse(dst, now, stat.S_ISLNK(now))
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def make_way(path: str | os.PathLike[str]) -> None:
    """Prepare ``path`` for a file to be created there with ``O_CREAT|O_EXCL``: nothing there,
    or an old regular file (removed now); anything else is refused."""
    dst = Path(path)
    try:
        st = os.lstat(dst)
    except FileNotFoundError:
        return
    except OSError as e:
        raise OutputError(f"cannot write {_show(dst)}: {_why(e)}") from None
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(dst, st.st_mode, True)
    if not stat.S_ISREG(st.st_mode):
        if stat.S_ISDIR(st.st_mode):
            raise OutputError(f"cannot write {_show(dst)}: it is a directory")
        raise OutputError(
            f"{_show(dst)} is {file_kind(st.st_mode)}; a trace is written to a regular file"
        )
    try:
        dst.unlink()
    except OSError as e:
        raise OutputError(f"cannot write {_show(dst)}: {_why(e)}") from None

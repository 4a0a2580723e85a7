"""The journal (write-ahead log) of an open Parquet file: each batch written to the file is appended to an Arrow IPC
stream next to it, so that a writer that dies (``kill -9``, an OOM) loses only the batch it was writing; the next
sink on the directory turns the journal into a finished file (:meth:`ParquetSink` recovers on start).

A journal is held with ``flock(LOCK_EX)`` by its writer for as long as it exists: the kernel releases the lock when
the last descriptor of the writer's open file goes, that is when the writer dies, so a recoverer that gets the lock
knows the writer is gone. A pid in the name with a liveness check would not: the pid of a dead writer can belong to
a live process again. ``flock`` locks belong to an open file, not to a process (``fcntl``/``lockf`` record locks are
per process, so a second sink in the same process would get them), and a writer removes its journal before it
releases the lock, so a recoverer that gets the lock checks that the name still points to the file it locked.
A journal is created under a temporary name, locked and given its schema, and only then renamed to its journal name:
no recoverer ever sees an unlocked journal of a live writer.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any, NamedTuple

from aiwatch.forksafe import renew_at_fork
from aiwatch.safety import warn_rate_limited

try:
    import fcntl
except ImportError:  # not POSIX: no journal
    fcntl = None  # type: ignore[assignment]

#: how a journal writes: one call per batch (a name the fault tests replace)
_write = os.write
JOURNAL_SUFFIX = ".journal"
NEW_SUFFIX = ".new"
AVAILABLE = fcntl is not None
#: An empty journal under its temporary name, or an empty open file, is its writer's to lock for this many seconds
#: after it was last modified (its mtime); older, it is a dead writer's (killed between making and locking it) and a
#: starting sink that can lock it removes it. A writer locks it microseconds after making it; one stopped in between
#: (SIGSTOP) for longer finds, once locked, that its name points to no file or another (:class:`Replaced`).
EMPTY_GRACE_SECONDS = 60.0
_log = logging.getLogger("aiwatch")
#: Directories whose failed sync was logged (once each); past this many, a rate-limited line without names.
_MAX_SYNC_TOLD = 1_000
_sync_told: set[str] = set()

#: Held from the ``os.open`` of a journal or an open file's lock until its descriptor is stored, and by a fork:
#: ``os.open`` lets other threads run, and a fork between the two left the child a descriptor it did not know of,
#: and so the writer's lock for as long as the child lived (a dead writer's journal could not be recovered).
#: Reentrant: a signal handler that forks on the thread inside would otherwise wait for itself.
_opening = threading.RLock()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_opening.acquire, after_in_parent=_opening.release,
                        after_in_child=_opening.release)


class Journal:
    """The journal being written for one open file; ``fsync`` syncs it to disk after each batch (without, a batch
    is in the OS's hands when :meth:`append` returns: it survives the process, not a power cut). Made with ``mode``
    less the umask."""

    def __init__(self, path: Path, schema: Any, *, fsync: bool, mode: int = 0o640) -> None:
        new = path.with_name(path.name + NEW_SUFFIX)
        self.path, self._fsync = path, fsync
        # A forked child lets go of the journal from the moment it is opened, not only once the sink holds it: a fork
        # while the writer thread is in here left the child the descriptor, and so the lock (-1: none open).
        self._fd, self._size = -1, 0
        renew_at_fork(self)
        with _opening:
            self._fd = os.open(new, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a file just made: nobody else has it
            _check_still_named(self._fd, new)
            header = schema.serialize()
            _write_all(self._fd, header)
            self._size = header.size  # the schema, then each batch appended whole: what the writer counted
            os.replace(new, path)
        except BaseException:
            # removed under the name it has (it may be renamed already: an interrupt after the rename) before the
            # lock goes: a journal left unlocked under its journal name is taken by a starting sink as a dead one's
            _unlink_if_same(self._fd, (new, path))
            self._close()
            raise
        if fsync:
            sync_directory(path.parent)

    def _renew_after_fork(self) -> None:
        self.let_go()

    def append(self, table: Any) -> None:
        """Write ``table`` to the journal, as Arrow IPC stream messages. A failure (a write, or with ``fsync`` the
        sync) cuts the journal back to its length before the call, so that it holds exactly the batches appended
        before, which the caller counted (the rows of this one are counted failed: a recovery must not make them
        into a file too); the caller stops using it."""
        # one write of the table's messages: pyarrow's stream writer made 3 to 4 calls per batch, and cost 4 times
        # as much
        data = b"".join(batch.serialize() for batch in table.to_batches())
        try:
            _write_all(self._fd, data)
            if self._fsync:
                os.fsync(self._fd)
        except BaseException:
            self._cut()
            raise
        self._size += len(data)

    def _cut(self) -> None:
        """Truncate the journal to the batches counted. A truncate that fails too (EIO) leaves what the append
        wrote: a torn batch is dropped by recovery, but a whole one (written, then the sync failed) is recovered, so
        those rows are counted failed and yet reach a file at the next start (more rows stored than counted, never
        fewer). Never raises."""
        with suppress(OSError):
            os.ftruncate(self._fd, self._size)
            os.lseek(self._fd, self._size, os.SEEK_SET)

    def let_go(self) -> None:
        """Close this process's descriptor of the journal, and nothing else: a forked child's copy of its parent's
        journal (the file and the lock are the parent's, and the lock goes with the parent's descriptor), or the
        journal of a file that failed, left unlocked for the next sink that starts to recover. Idempotent, never
        raises."""
        with suppress(OSError):
            self._close()

    def remove(self) -> None:
        """Delete the journal, then release it (in that order: see the module docstring). Never raises."""
        with suppress(OSError):
            self.path.unlink()
        with suppress(OSError):
            self._close()

    def _close(self) -> None:
        # the number is forgotten first: a child forked later must not close a descriptor that has it by then
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class OpenFileLock:
    """A new file at ``path``, made (empty) and locked with ``flock(LOCK_EX)`` for as long as its writer writes it
    (through another descriptor: ``flock`` locks belong to this one's open file), so that a sink starting on the
    directory takes the lock (:func:`claim`, ``begun=True``) only once the writer is gone. Raises, leaving no file,
    when the file exists or cannot be made or locked. A forked child lets go of its copy at once, as of a journal's.
    The file is made with ``mode`` less the umask; pyarrow, opening it by name, keeps that mode.
    """

    def __init__(self, path: Path, mode: int = 0o640) -> None:
        self._fd = -1
        renew_at_fork(self)
        with _opening:
            self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a file just made: nobody else has it
            _check_still_named(self._fd, path)
        except BaseException:
            # before the descriptor goes: it is empty, so no starting sink takes it meanwhile; only if it is still
            # this one (a file made under the name since is not)
            _unlink_if_same(self._fd, (path,))
            self.release()
            raise

    def _renew_after_fork(self) -> None:
        self.release()

    def holds(self, path: Path) -> bool:
        """Whether ``path`` names the file this lock holds (pyarrow opens the file by its name: if something removed
        it, pyarrow made a new one there, which nothing locks)."""
        return self._fd >= 0 and _same_file(self._fd, path)

    def release(self) -> None:
        """Close this process's descriptor (the lock goes with the last one of its open file). Idempotent, never
        raises; the caller renames or removes the file first."""
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with suppress(OSError):
                os.close(fd)


def claim(path: Path, *, begun: bool = False) -> int | None:
    """A locked descriptor of the journal (or :class:`OpenFileLock`'s file) at ``path`` when its writer is gone,
    else ``None`` (its writer is alive, or finished with it and removed or renamed it). The caller closes the
    descriptor once done with the file.

    ``begun`` (for a journal under its temporary name, or an open file) leaves alone one that is still empty and was
    modified less than :data:`EMPTY_GRACE_SECONDS` ago: its writer may be between creating and locking it, and only a
    writer that holds the lock writes into it. Anything but a regular file under such a name is left alone, and never
    followed: no writer made it (a FIFO opened without ``O_NONBLOCK`` would hold the start until something wrote to
    it; a symbolic link would have the sink lock, read or judge a file elsewhere)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError:
        if path.is_symlink():  # ELOOP (EMLINK on the BSDs)
            return None
        raise
    try:
        found = os.fstat(fd)
        if not stat.S_ISREG(found.st_mode) or (begun and not found.st_size and not _stale(found)):
            raise BlockingIOError
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        here = os.stat(path)
        mine = os.fstat(fd)
        if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino):
            return fd
    except (BlockingIOError, FileNotFoundError):
        pass
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def _stale(found: os.stat_result) -> bool:
    """Whether a file was last modified more than :data:`EMPTY_GRACE_SECONDS` ago (a future mtime is not)."""
    return time.time() - found.st_mtime > EMPTY_GRACE_SECONDS


class Reader:
    """The whole, valid batches of a claimed journal, read one at a time as the caller iterates (once): only the batch
    being read is in memory, whatever the journal's size. ``schema`` is ``None`` for a journal torn inside its
    schema. Once the iteration ends, ``torn_bytes`` counts the bytes after the last whole batch (a torn last batch,
    or a batch that is not valid and everything after it: ``invalid`` says why), ``rows`` and ``batches`` the rest.
    A batch whose body is compressed (Arrow IPC body compression, which the sink never writes), or of a metadata
    version other than V5 (one of V4 may be compressed in an older form), is not valid: it is refused from its
    message's metadata before pyarrow reads its body (:func:`_refusal`).
    Not all damage is taken as a torn end or a batch not valid: only pyarrow's ``ArrowInvalid``, and its ``OSError``
    without an errno, are (and a batch's ``UnicodeDecodeError``): a torn end where the journal stops inside the
    message pyarrow could not read, a batch not valid where that message is all there (damage: a flipped bit). Any
    other error of pyarrow's is raised, from the constructor or the iteration: an ``ArrowNotImplementedError`` for a
    damaged schema naming a type pyarrow does not implement ("Integers with less than 8 bits not implemented"), say,
    which the sink takes as a refusal of the journal and sets it aside (``ParquetSink._refused``: an
    ``ArrowTypeError`` or ``ArrowCapacityError`` too; any other it leaves for a later try). An I/O error reading the
    journal is raised too (the disk, not the journal:
    the next start may succeed), and so is a ``MemoryError``."""

    def __init__(self, fd: int, pa: Any) -> None:
        self._pa, self._fd = pa, fd
        self._size = os.fstat(fd).st_size
        self._source = pa.PythonFile(_Bounded(fd, self._size), mode="r")
        self.schema: Any = None
        self.rows = self.batches = 0
        self.invalid = ""
        self._whole = 0  # where the last whole batch (or the schema) ends
        self._values = 0  # of the batches read: the values of their arrays, nested ones' included (_values)
        self._stream: Any = None
        if _too_long(fd, 0, self._size):
            return
        try:
            self._stream = pa.ipc.open_stream(self._source)
        except pa.ArrowInvalid as exc:
            self._unreadable(exc)
            return
        except OSError as exc:  # pyarrow's own "Expected to read" errors are OSErrors too; the disk's have errno
            if exc.errno is not None:
                raise
            self._unreadable(exc)
            return
        self.schema = self._stream.schema
        self._whole = self._source.tell()

    def __iter__(self) -> Iterator[Any]:
        if self._stream is None:
            return
        pa = self._pa
        while True:
            # judged before pyarrow reads them: it decompresses a compressed body on its own, and a few kilobytes of
            # zstd decode to gigabytes, which no count of values sees (a run of zeros in one string is one value)
            refused = _refusal(self._fd, self._source.tell(), self._size)
            if refused is None:  # a damaged length (:func:`_too_long`'s judgement, of each message read): torn here
                break
            if refused:
                self.invalid = refused
                break
            try:
                batch = self._stream.read_next_batch()
            except StopIteration:
                break
            except pa.ArrowInvalid as exc:  # "Expected to read N bytes": the end of a torn batch, or damage
                self._unreadable(exc)
                break
            except OSError as exc:
                if exc.errno is not None:
                    raise
                self._unreadable(exc)
                break
            try:
                # the stream reader checks the messages, not the data: offsets out of their buffer crash Parquet's
                # writer
                batch.validate(full=True)
                self._values += _values(pa, batch)
            except (pa.ArrowInvalid, UnicodeDecodeError) as exc:  # the latter: a name not UTF-8 (pyarrow < 15)
                self.invalid = str(exc)
                break
            if self._values > MAX_VALUES_PER_BYTE * self._size + VALUES_MARGIN:
                self.invalid = (f"its arrays claim {self._values} values with the batches before it, more than "
                                f"{MAX_VALUES_PER_BYTE} per byte of the journal ({self._size} bytes)")
                break
            self._whole = self._source.tell()
            self.rows += batch.num_rows
            self.batches += 1
            yield batch

    def _unreadable(self, exc: Exception) -> None:
        """pyarrow could not read the message after the last whole batch (or the schema): the journal's torn end
        when it stops inside that message (a writer that dies leaves a prefix of the batch it was appending), damage
        (``invalid``) when the message is all there (:func:`_whole_message`)."""
        if _whole_message(self._fd, self._whole, self._size):
            self.invalid = f"a message whose bytes are all there cannot be read ({exc}): damaged, not torn"

    @property
    def torn_bytes(self) -> int:
        """The bytes after the last whole batch read (all of them before any)."""
        return self._size - self._whole


#: The most values (a batch's rows in each column, and the items of a nested column's children) all the batches of a
#: journal may hold, per byte of the journal, and besides. A null column holds any number of rows in no bytes (and a
#: list of nulls any number of items): a damaged or hostile journal claiming 2^40 of them held the start for minutes
#: writing them, or ran it out of memory. The sink writes only string, float64, bool and timestamp columns, each
#: value taking at least a bit of the journal's bytes (a bool), no two values the same bits: its journals hold at
#: most 8 values per byte, and the timestamp column of every batch (8 bytes a row) keeps far below that.
MAX_VALUES_PER_BYTE = 8
VALUES_MARGIN = 1024
#: The longest metadata of one IPC message a journal may hold: a batch's metadata grows with its columns, not its
#: rows (kilobytes); a longer length is a damaged prefix, taken as the journal's torn end rather than read.
MAX_METADATA_BYTES = 64 << 20
_CONTINUATION = b"\xff\xff\xff\xff"
_METADATA_GUESS = 1024


def _too_long(fd: int, at: int, size: int) -> bool:
    """Whether the IPC message at ``at`` claims metadata longer than :data:`MAX_METADATA_BYTES` (or a negative
    length): its reader would read all of the journal left, and hold it, before failing."""
    head = os.pread(fd, 8, at) if at < size else b""
    if len(head) < 4:
        return False  # the end, or a torn prefix: pyarrow says so
    if head[:4] == _CONTINUATION:
        if len(head) < 8:
            return False
        head = head[4:]
    length = int.from_bytes(head[:4], "little", signed=True)
    return length < 0 or length > MAX_METADATA_BYTES


def _whole_message(fd: int, at: int, size: int) -> bool:
    """Whether the IPC message at ``at`` is all there as its lengths say (its metadata, and the body its metadata
    names, when it can be read): a message that is not, or an end-of-stream marker, is what a writer that died while
    appending it leaves."""
    head = os.pread(fd, 8, at) if at < size else b""
    prefix = 8 if head[:4] == _CONTINUATION else 4
    if len(head) < prefix:
        return False
    length = int.from_bytes(head[prefix - 4:prefix], "little", signed=True)
    if length <= 0 or length > MAX_METADATA_BYTES or at + prefix + length > size:
        return False
    header = _message_header(os.pread(fd, length, at + prefix))
    return header is None or at + prefix + length + header.body_length <= size


#: The header types of an IPC message (Arrow's format/Message.fbs, union MessageHeader) recovery looks into.
DICTIONARY_BATCH = 2
RECORD_BATCH = 3


#: The IPC metadata version (Arrow's format/Schema.fbs, enum MetadataVersion) of every message the sink writes (the
#: default of pyarrow since 1.0). pyarrow also decompresses a batch of version V4 (Arrow 0.17) whose message's
#: custom metadata names a codec (``ARROW:experimental_compression``), with no compression field for it: a batch of
#: any other version is refused.
V5 = 4


class _MessageHeader(NamedTuple):
    """What :func:`_message_header` reads of an IPC message's metadata: its header type (``RECORD_BATCH``...), the
    length of its body, whether its batch's body is compressed (a record batch's, or a dictionary batch's data: its
    compression field), and its metadata version (``V5``...)."""

    kind: int
    body_length: int
    compressed: bool
    version: int


class _OutOfRange(Exception):
    """An offset of a flatbuffer pointing out of its bytes (raised and caught in :func:`_message_header` only)."""


def _message_header(metadata: bytes) -> _MessageHeader | None:
    """The header of an IPC message, read from its metadata (the ``Message`` flatbuffer, Arrow's
    format/Message.fbs), or ``None`` when the metadata is not valid: an offset out of its bytes, or a negative body
    length. Reads only the fields it needs (``Message``: ``version``, ``header_type``, ``header``, ``bodyLength``;
    ``RecordBatch``: ``compression``; ``DictionaryBatch``: ``data``), checking each read against the bytes; never
    raises."""
    try:
        message = _table(metadata, _scalar(metadata, 0, _U32))
        at = _field(metadata, message, 0, 2)  # version: V1 when absent (the flatbuffer's default)
        version = 0 if at is None else _scalar(metadata, at, _I16)
        at = _field(metadata, message, 1, 1)  # header_type
        kind = 0 if at is None else _scalar(metadata, at, _U8)
        at = _field(metadata, message, 3, 8)  # bodyLength
        body_length = 0 if at is None else _scalar(metadata, at, _I64)
        if body_length < 0:
            return None
        compressed = False
        batch = _child(metadata, message, 2) if kind in (DICTIONARY_BATCH, RECORD_BATCH) else None  # header
        if batch is not None and kind == DICTIONARY_BATCH:
            batch = _child(metadata, batch, 1)  # data: its RecordBatch
        if batch is not None:
            compressed = _field(metadata, batch, 3, 4) is not None  # compression: a BodyCompression, any codec
        return _MessageHeader(kind, body_length, compressed, version)
    except _OutOfRange:
        return None


_U8, _I16, _U16, _I32, _U32, _I64 = (struct.Struct(f"<{code}") for code in "BhHiIq")


def _scalar(data: bytes, at: int, kind: struct.Struct) -> int:
    if at < 0 or at + kind.size > len(data):
        raise _OutOfRange
    value: int = kind.unpack_from(data, at)[0]
    return value


def _table(data: bytes, at: int) -> tuple[int, int, int]:
    """The flatbuffer table at ``at``: where it is, where its vtable is, and the vtable's size in bytes."""
    vtable = at - _scalar(data, at, _I32)
    size = _scalar(data, vtable, _U16)
    if size % 2 or vtable + size > len(data):
        raise _OutOfRange
    return at, vtable, size


def _field(data: bytes, table: tuple[int, int, int], index: int, size: int) -> int | None:
    """Where field ``index`` of ``table`` is (``size`` bytes), or ``None`` when the table does not hold it."""
    at, vtable, vtable_size = table
    slot = 4 + 2 * index
    if slot + 2 > vtable_size:
        return None
    offset = _scalar(data, vtable + slot, _U16)
    if not offset:
        return None
    if at + offset + size > len(data):  # ``at`` is not negative: the table's own offset was read there
        raise _OutOfRange
    return at + offset


def _child(data: bytes, table: tuple[int, int, int], index: int) -> tuple[int, int, int] | None:
    """The table field ``index`` of ``table`` points to, or ``None`` when it has none."""
    at = _field(data, table, index, 4)
    return None if at is None else _table(data, at + _scalar(data, at, _U32))


def _refusal(fd: int, at: int, size: int) -> str | None:
    """Why the messages pyarrow's stream reader reads next, from ``at`` (the dictionary batches before the next
    record batch, and that one), are refused before it reads their bodies, or ``""``: a body compressed (the sink
    never compresses one: pyarrow would decode it, whatever its size), a batch of a metadata version other than
    :data:`V5` (one of V4 may be compressed in the old form, which its compression field does not show), or metadata
    that is not valid (its compression cannot be told). ``None`` for a damaged metadata length of a message it meets
    (judged as :func:`_too_long` judges the schema's: its reader would read all of the journal left), the next one
    or one after a dictionary batch pyarrow reads in the same call, so the journal is torn from ``at``. A message
    cut short, or past the journal's end, is not judged here: pyarrow finds the journal torn there."""
    while True:
        head = os.pread(fd, 8 + _METADATA_GUESS, at) if at < size else b""
        prefix = 8 if head[:4] == _CONTINUATION else 4
        if len(head) < prefix:
            return ""
        length = int.from_bytes(head[prefix - 4:prefix], "little", signed=True)
        if length < 0 or length > MAX_METADATA_BYTES:
            return None
        if not length:  # the end of the stream
            return ""
        metadata = head[prefix:prefix + length]
        if len(metadata) < length:  # one read for most: a batch's metadata is some hundred bytes
            metadata = os.pread(fd, length, at + prefix)
            if len(metadata) < length:
                return ""
        header = _message_header(metadata)
        if header is None:
            return "a message's metadata is not valid (an offset out of its bytes, or a negative body length)"
        if header.kind not in (DICTIONARY_BATCH, RECORD_BATCH):
            return ""
        kind = "a dictionary batch" if header.kind == DICTIONARY_BATCH else "a record batch"
        if header.compressed:
            return (f"{kind} whose body is compressed (Arrow IPC body compression), which the sink never writes: "
                    f"refused before it was read")
        if header.version != V5:
            return (f"{kind} of IPC metadata version {_version_name(header.version)}, which the sink never writes "
                    f"(it writes V5): its body may be compressed in the old form (a codec named in its custom "
                    f"metadata): refused before it was read")
        if header.kind == RECORD_BATCH:
            return ""
        at += prefix + length + header.body_length


def _version_name(version: int) -> str:
    """The name of an IPC metadata version but V5's: ``V1`` to ``V4`` (before Arrow 1.0), or an unknown one's number."""
    return f"V{version + 1} (pre-1.0)" if 0 <= version < V5 else f"{version} (unknown)"


def _values(pa: Any, batch: Any) -> int:
    """The values a batch claims: its rows, its rows in each column, and the length of each child of a nested column
    (a list's items, a struct's fields, a dictionary), read from the arrays' lengths, not their data."""
    types = pa.types
    rows: int = batch.num_rows
    # a flat column claims its rows: only a nested one's arrays are looked at (pyarrow hands each out at a cost)
    nested = [i for i, kind in enumerate(batch.schema.types) if types.is_nested(kind) or types.is_dictionary(kind)
              or types.is_run_end_encoded(kind) or isinstance(kind, pa.BaseExtensionType)]
    total: int = rows * (1 + batch.num_columns - len(nested))  # and the rows: a batch of no columns claims them
    if not nested:
        return total
    # by index: batch.columns decodes each column's name, which a damaged journal may not hold as UTF-8
    struct = batch.to_struct_array()  # once: each call builds the struct of every column
    arrays = [struct.field(i) for i in nested]
    list_views = [getattr(types, name) for name in ("is_list_view", "is_large_list_view") if hasattr(types, name)]
    while arrays:
        array = arrays.pop()
        total += len(array)
        kind = array.type
        if isinstance(kind, pa.BaseExtensionType):  # pyarrow's own (opaque, fixed_shape_tensor...) and Python's
            arrays.append(array.storage)
        elif types.is_dictionary(kind):
            arrays.append(array.dictionary)
        elif types.is_run_end_encoded(kind):
            arrays += (array.run_ends, array.values)
        elif any(is_view(kind) for is_view in list_views):  # pyarrow >= 16
            # views may overlap: R rows can each view the same items, nested ones too, which Parquet writes R times
            # each; the sink never writes a list view, so one is no journal of its
            raise pa.ArrowInvalid(f"a column of {kind}, which the sink never writes (its views may overlap)")
        elif (types.is_list(kind) or types.is_large_list(kind) or types.is_fixed_size_list(kind)
              or types.is_map(kind)):
            arrays.append(array.values)
        elif types.is_struct(kind) or types.is_union(kind):
            arrays += (array.field(i) for i in range(kind.num_fields))
    return total


class _Bounded(io.RawIOBase):
    """A claimed journal's bytes, read through its descriptor at an offset of its own, no read asking for more than is
    left: a damaged length prefix that claims gigabytes allocates nothing of the sort."""

    def __init__(self, fd: int, size: int) -> None:
        super().__init__()
        self._fd, self._size, self._at = fd, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._at

    def read(self, size: int | None = -1) -> bytes:
        left = self._size - self._at
        wanted = left if size is None or size < 0 else min(size, left)
        data = os.pread(self._fd, wanted, self._at) if wanted > 0 else b""
        self._at += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer)[:len(data)] = data
        return len(data)


class Replaced(FileNotFoundError):
    """A file just made was removed (or replaced) under its name before its writer locked it: a writer stopped for
    longer than :data:`EMPTY_GRACE_SECONDS` between making and locking it, whose empty file a starting sink took for
    a dead writer's. Its lock holds a file nobody can see; the writer uses a new name."""


def _check_still_named(fd: int, path: Path) -> None:
    if not _same_file(fd, path):
        raise Replaced(f"{path} was removed before its writer locked it (it was stopped for more than "
                       f"{EMPTY_GRACE_SECONDS:g} s, and a starting sink took it for a dead writer's)")


def _same_file(fd: int, path: Path, *, follow_symlinks: bool = False) -> bool:
    """Whether ``path`` (not followed, unless ``follow_symlinks``) is the open file of ``fd``."""
    try:
        here, mine = os.stat(path, follow_symlinks=follow_symlinks), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _unlink_if_same(fd: int, names: tuple[Path, ...]) -> None:
    """Remove each of ``names`` that is the open file of ``fd``. Never raises."""
    for name in names:
        if _same_file(fd, name, follow_symlinks=True):
            with suppress(OSError):
                name.unlink()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[_write(fd, view):]


def sync_directory(folder: Path) -> None:
    """Make a name made in ``folder`` durable (a rename, a new journal: a name lives in its directory, which ``fsync``
    of the file does not write). A failure (a filesystem whose directories cannot be synced or opened, EIO) is
    logged once per directory at WARNING and goes no further: the file is complete and its writer holds it either
    way; only its name's durability is less. Never raises."""
    try:
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        _tell_sync_failed(folder, exc)


def _tell_sync_failed(folder: Path, exc: OSError) -> None:
    name = str(folder)
    if name in _sync_told:
        return
    if len(_sync_told) >= _MAX_SYNC_TOLD:  # a partition a model-hour: stay bounded over a long life
        warn_rate_limited("journal.sync_directory", "aiwatch: prediction log directories could not be synced (past "
                          "the first %d, which were named): %r", _MAX_SYNC_TOLD, exc)
        return
    _sync_told.add(name)
    with suppress(Exception):
        _log.warning("aiwatch: prediction log directory %s could not be synced (%r): the names of its files and "
                     "journals are less durable (a power cut may lose a rename); logged once per directory",
                     name, exc)

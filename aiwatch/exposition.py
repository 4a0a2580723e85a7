"""Serving the metrics: ``/metrics`` as an ASGI app, a WSGI app, or a standalone HTTP server.

Prometheus text or OpenMetrics is chosen by content negotiation (the ``Accept`` header), as prometheus_client does;
exemplars (trace ids on latency histograms) appear only in OpenMetrics. When ``PROMETHEUS_MULTIPROC_DIR`` is set
(gunicorn with several workers), the apps serve the merged view of every worker process.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import prometheus_client
from prometheus_client import CollectorRegistry
from prometheus_client import multiprocess as _multiprocess
from prometheus_client import values as _values
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.samples import Sample

from aiwatch.deferred import run_every_deferred
from aiwatch.env import LEGACY_MULTIPROC_DIR, MULTIPROC_DIR, MULTIPROCESS_DROP_DEAD
from aiwatch.forksafe import at_fork_in_child
from aiwatch.safety import record_error

try:
    import fcntl
except ImportError:  # not POSIX: no fold, and merges take no lock
    fcntl = None  # type: ignore[assignment]


def multiprocess_dir() -> str | None:
    """The multiprocess directory as prometheus_client reads it: ``PROMETHEUS_MULTIPROC_DIR``, else the old lowercase
    ``prometheus_multiproc_dir``; ``None`` when neither is set. Set, even empty, either one puts prometheus_client in
    multiprocess mode."""
    for variable in (MULTIPROC_DIR, LEGACY_MULTIPROC_DIR):
        if variable.is_set():
            return variable.raw()
    return None


def multiprocess_enabled() -> bool:
    """Whether prometheus_client multiprocess mode is on with a directory to merge (:func:`multiprocess_dir`)."""
    return bool(multiprocess_dir())


def multiprocess_misconfiguration() -> str | None:
    """What is wrong with the multiprocess setting, or ``None``: set but empty, prometheus_client is in multiprocess
    mode with no directory (every process writes its sample files into its working directory, and there is nothing
    to merge: ``/metrics`` shows the one process that answers the scrape)."""
    if multiprocess_dir() == "":
        name = (MULTIPROC_DIR if MULTIPROC_DIR.is_set() else LEGACY_MULTIPROC_DIR).name
        return (f"{name} is set but empty: prometheus_client writes each process's sample files into its working "
                "directory, and /metrics shows only the worker that answers each scrape. Set it to a directory "
                "(the same for every worker), or unset it")
    return None


def multiprocess_unservable() -> str | None:
    """What makes the merged ``/metrics`` of multiprocess mode serve nothing, or ``None``: the directory is set, but
    prometheus_client was imported before it was and keeps every value in memory (it picks its mode once, at its
    import), so no process writes a sample file there."""
    directory = multiprocess_dir()
    if not directory:
        return None
    name = (MULTIPROC_DIR if MULTIPROC_DIR.is_set() else LEGACY_MULTIPROC_DIR).name
    if not getattr(_values.ValueClass, "_multiprocess", False):
        return (f"{name} is set ({directory!r}), but only after prometheus_client was imported: it keeps every "
                "process's metrics in memory, and /metrics, the merge of that directory's files, would serve none "
                "of them. Set it in the environment the server starts with: not with gunicorn's -e or raw_env "
                "(applied after the config file imported aiwatch.gunicorn), nor in code after importing aiwatch")
    return None


def multiprocess_directory_problem() -> str | None:
    """What keeps this process from writing its sample files into the multiprocess directory, or ``None``: a path
    that is no directory (a regular file), or a directory this process may not write to or enter. A missing
    directory is not a problem: :class:`aiwatch.metrics.Metrics` makes it. With a file, the setup logged
    ``NotADirectoryError`` and ``FileExistsError`` and every scrape raised prometheus_client's "not set or not a
    directory"; with a read-only directory, the setup logged ``OSError(30)`` and ``/metrics`` answered 200 with
    nothing, every request of the process recorded nowhere."""
    directory = multiprocess_dir()
    if not directory:
        return None
    name = (MULTIPROC_DIR if MULTIPROC_DIR.is_set() else LEGACY_MULTIPROC_DIR).name
    if os.path.exists(directory) and not os.path.isdir(directory):
        return (f"{name} is {directory!r}, which is not a directory: prometheus_client writes each process's sample "
                "files into that directory, so no metric would be recorded and every /metrics scrape would fail. "
                "Set it to a directory (the same for every worker; it is made when missing)")
    if os.path.isdir(directory) and not os.access(directory, os.W_OK | os.X_OK):
        return (f"{name} is {directory!r}, a directory this process (uid {os.geteuid()}) cannot write to: "
                "prometheus_client makes each process's sample file there, so this process would record nothing "
                "and /metrics would serve none of its requests. Make it writable by the server's user, or set it "
                "to another directory")
    return None


def check_sample_directory() -> None:
    """Raise a ValueError naming the variable when this process cannot write its sample files
    (:func:`multiprocess_directory_problem`), for :func:`aiwatch.instrument` and the WSGI middleware to call when
    the app is instrumented; nothing when prometheus_client is not in multiprocess mode."""
    if getattr(_values.ValueClass, "_multiprocess", False):
        problem = multiprocess_directory_problem()
        if problem is not None:
            raise ValueError(problem)


#: prometheus_client's sample files in multiprocess mode: ``counter_<pid>.db``, ``gauge_livesum_<pid>.db``...
_SAMPLE_FILE = re.compile(r"(?:counter|histogram|summary|gauge_[a-z]+)_([0-9]+)\.db")


def remove_dead_process_files(*, parent: bool = True) -> int:
    """Remove the sample files that processes no longer running left in :func:`multiprocess_dir` (creating the
    directory when it is missing); returns how many. A run killed with its workers, or one that ended before
    :func:`aiwatch.gunicorn.child_exit` ran, leaves them: merged into ``/metrics`` they show its requests as still
    in flight, and a new worker given a dead one's pid (pids restart at 1 in a container) adds to its old counts.
    Files of running processes (another server's workers during gunicorn's USR2 upgrade) are kept. A file that
    cannot be removed is left, and counted once per call as aiwatch's error (component ``multiprocess``). Run in
    gunicorn's master (``on_starting``), it removes the archives (:func:`fold_dead_process_files`) of masters no
    longer running, and of its own pid (a previous run's, in a container where the master is pid 1 again). Run
    before another server starts (``python -c`` in its entrypoint), it removes the archives of its parent's pid too
    (:func:`fold_dead_at_scrape` names them with the supervisor's pid, and the shell that runs it execs the
    server next, pid 1 again in a container); gunicorn's ``on_starting`` passes ``parent=False``: its parent is the
    old master during a USR2 upgrade, whose archive its workers still fold into.

    Under the fold lock, held exclusively as a fold holds it (waiting :data:`FOLD_LOCK_SECONDS` at most, then removing
    without it, counted): during a USR2 upgrade the old master's workers still merge and fold the directory, and a
    file removed between a merge's listing and its read failed that merge (counted as an error, the scrape answered
    without it), or a fold reading it."""
    directory = Path(multiprocess_dir() or "")
    directory.mkdir(parents=True, exist_ok=True)
    with _fold_lock(str(directory), exclusive=True) as held:
        if held is False:
            record_error("multiprocess", TimeoutError(
                f"the fold lock of {directory} was not had in {FOLD_LOCK_SECONDS:g}s: the files of processes no longer "
                "running removed without it"))
        return _remove_dead_locked(directory, parent)


def _remove_dead_locked(directory: Path, parent: bool) -> int:
    removed = 0
    failed: list[tuple[Path, OSError]] = []
    for path in directory.iterdir():
        match = _SAMPLE_FILE.fullmatch(path.name)
        archive = _ARCHIVE_FILE.fullmatch(path.name)
        if match:
            stale = not _running(int(match.group(1)))
        elif archive:  # this master folds into its archive from now on: one named with its pid is a previous run's
            owner = int(archive.group(2))
            stale = owner == os.getpid() or (parent and owner == os.getppid()) or not _running(owner)
        else:
            continue
        if stale and path.is_file():
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:  # one file that cannot go (another user's) leaves the others to remove
                failed.append((path, exc))
                continue
            removed += 1
    if failed:
        first, error = failed[0]
        record_error("multiprocess", OSError(f"{len(failed)} sample file(s) of processes no longer running could not "
                                             f"be removed, the first {first.name}: {error}"))
    return removed


def _running(pid: int) -> bool:
    if pid <= 0:  # 0 would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, OSError):
        return False
    return True


# --- folding dead workers' files ----------------------------------------------------------------------------------
#: the sample files of a dead process that fold into an archive, and how two values of one key combine there (as the
#: merge combines them, so that merging the archive gives what merging its sources gave): counters, histograms
#: (their buckets are stored per bucket, not cumulated) and summaries add up, as ``sum`` gauges do; ``max``/``min``
#: gauges keep the extreme; ``mostrecent`` gauges the value of the latest timestamp, with it. The ``live*`` gauges
#: go (``mark_process_dead``); ``all`` gauges stay, a series per pid, as prometheus_client keeps them.
_FOLDS = {"counter": "sum", "histogram": "sum", "summary": "sum", "gauge_sum": "sum", "gauge_max": "max",
          "gauge_min": "min", "gauge_mostrecent": "mostrecent"}
_FOLDED_FILE = re.compile(r"(counter|histogram|summary|gauge_(?:sum|max|min|mostrecent))_([0-9]+)\.db")
#: a master's archive (``counter_archive-<master pid>.db``: prometheus_client's merge reads it as any counter file,
#: and a gauge's ``pid`` label, which these modes drop, as ``archive-<pid>``), its next version being written
#: (``.new``) and the intent that names the files it replaces (``.intent``; ``.intent.new`` being written)
_ARCHIVE_FILE = re.compile(
    r"(counter|histogram|summary|gauge_[a-z]+)_archive-([0-9]+)\.db(?:\.new|\.intent(?:\.new)?)?")
_INTENT = ".intent"
#: held shared by each merge and exclusively by each fold (``flock``)
_FOLD_LOCK = ".aiwatch-fold.lock"
#: taken before the fold lock, shared by a merge until it holds the lock, exclusively by a fold for its length
_FOLD_GATE = ".aiwatch-fold.gate"
#: how long a fold or a merge waits for the lock: a fold takes milliseconds, a merge about as long as a scrape
FOLD_LOCK_SECONDS = 5.0
#: the fold lock's descriptors this process holds: a child forked meanwhile closes its copies, or it would hold the
#: lock for as long as it lives (``flock`` locks belong to the open file, which the copy shares)
_held_locks: set[int] = set()
#: the workers gunicorn reaped whose files are not folded yet (the lock was not had in time: the next exit retries)
_pending: set[int] = set()


def _close_inherited_locks() -> None:
    for fd in _held_locks:
        with suppress(OSError):
            os.close(fd)
    _held_locks.clear()


at_fork_in_child(_close_inherited_locks)


@contextmanager
def _fold_lock(path: str, exclusive: bool, wait: bool = True) -> Iterator[bool | None]:
    """Hold ``path``'s fold lock, shared for a merge, exclusive for a fold, waiting :data:`FOLD_LOCK_SECONDS` at
    most (not at all without ``wait``); yields whether it is held, or ``None`` where there is none to take: on a
    system without ``flock``, or where the lock file cannot be opened (a read-only volume before any process made
    it).

    Through a gate (:data:`_FOLD_GATE`): a merge passes it (shared) before taking the lock, a fold shuts it
    (exclusive) until it is done. ``flock`` grants a shared lock while another is held, a fold waiting or not: merges
    that overlapped without a gap (workers each answering a scraper) kept a fold out as long as they did, and
    gunicorn's master waited up to :data:`FOLD_LOCK_SECONDS` at each exit, blocked. A fold waiting at the lock now
    holds the gate: the merges in progress end, the next ones wait for the fold."""
    fd = _lock_file(path, _FOLD_LOCK)
    if fd < 0:
        yield None
        return
    gate = _lock_file(path, _FOLD_GATE)
    descriptors = [fd] if gate < 0 else [fd, gate]
    _held_locks.update(descriptors)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        deadline = time.monotonic() + (FOLD_LOCK_SECONDS if wait else 0.0)
        held = (gate < 0 or _flock(gate, mode, deadline)) and _flock(fd, mode, deadline)
        if held and gate >= 0 and not exclusive:
            fcntl.flock(gate, fcntl.LOCK_UN)  # passed: the gate holds no fold back while this merge reads
        yield held
    finally:
        for descriptor in descriptors:
            _held_locks.discard(descriptor)
            os.close(descriptor)


def _lock_file(path: str, name: str) -> int:
    """A descriptor of the lock file ``name`` in ``path`` (made when missing), or -1 where there is none (see
    :func:`_fold_lock`)."""
    if fcntl is None:
        return -1
    for flags in (os.O_RDWR | os.O_CREAT, os.O_RDONLY):
        try:
            return os.open(os.path.join(path, name), flags, 0o666)
        except OSError:
            continue
    return -1


def _flock(fd: int, mode: int, deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)


def _archive_name(kind: str, master: int) -> str:
    return f"{kind}_archive-{master}.db"


def _read_intent(path: str, intent: str) -> tuple[int, list[str]] | None:
    """An intent's (inode of the archive version it names, the files that version holds), or ``None`` for one gone
    or not whole."""
    try:
        with open(os.path.join(path, intent), encoding="utf-8") as file:
            data = json.load(file)
        return int(data["inode"]), [str(name) for name in data["sources"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _committed(path: str, intent: str) -> tuple[bool, list[str]]:
    """Whether the archive version an intent names replaced the archive (then its sources are in it), and its
    sources."""
    read = _read_intent(path, intent)
    if read is None:
        return False, []
    inode, sources = read
    try:
        return os.stat(os.path.join(path, intent[:-len(_INTENT)])).st_ino == inode, sources
    except OSError:
        return False, sources


def _merged_files(path: str) -> list[str]:
    """The sample files a merge reads: every ``*.db`` of ``path`` but those an archive holds already, which a fold
    interrupted between replacing the archive and removing them (the process folding died) left."""
    with os.scandir(path) as listing:
        entries = list(listing)
    folded: set[str] = set()
    for entry in entries:
        if entry.name.endswith(_INTENT) and _ARCHIVE_FILE.fullmatch(entry.name):
            committed, sources = _committed(path, entry.name)
            if committed:
                folded.update(sources)
    return [entry.path for entry in entries  # as glob("*.db")
            if entry.name.endswith(".db") and not entry.name.startswith(".") and entry.name not in folded
            and _begun(entry)]


def _begun(entry: os.DirEntry[str]) -> bool:
    """Whether a sample file has its header. A process's prometheus_client makes its file empty, then sizes it
    (``MmapedDict``: ``open``, then ``truncate``); read in between, it failed the merge (``struct.error``), and
    the scrape answered 500, as a gunicorn worker recycled by ``max_requests`` made its files at its first request.
    An empty file holds no value yet, and files do not shrink: one left out here is read at the next scrape."""
    try:
        return entry.stat().st_size > 0
    except FileNotFoundError:  # removed since the listing (a live gauge's): nothing to read
        return False


def _file_values(path: str) -> list[tuple[str, float, float]]:
    """The (key, value, timestamp) of a sample file; none for an empty one (see :func:`_begun`: a process killed
    between making its file and sizing it left it so)."""
    if os.path.getsize(path) == 0:
        return []
    values = MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
    return [(key, value, timestamp) for key, value, timestamp, _ in values]


def _finish_interrupted(path: str) -> None:
    """Complete or undo what folds left half done, under the fold lock held exclusively (so no fold is under way):
    a process that died while folding, or an error (a full disk) between a fold's steps. An archive replaced has its
    sources removed, then its intent; an archive's next version or intent not put in place is removed. A source
    named with the pid of a process running now is that process's file (the pid reused since): it stays."""
    names = os.listdir(path)
    for name in names:
        if name.endswith(_INTENT) and _ARCHIVE_FILE.fullmatch(name):
            committed, sources = _committed(path, name)
            if committed:
                for source in sources:
                    match = _FOLDED_FILE.fullmatch(source)
                    if match and not _running(int(match.group(2))):
                        _unlink(os.path.join(path, source))
    for name in names:
        if name.endswith((_INTENT, ".new")) and _ARCHIVE_FILE.fullmatch(name):
            _unlink(os.path.join(path, name))


def _unlink(path: str) -> None:
    with suppress(FileNotFoundError):
        os.remove(path)


def _fold_into(path: str, archive: str, how: str, sources: list[str]) -> None:
    """Replace ``archive`` with a version that holds its values and those of ``sources`` combined (``how``), then
    remove the sources. An intent naming the new version's inode and the sources is written before the archive is
    replaced: a merge (and the next fold) reading it after the replacement leaves out the sources not removed yet,
    and the new version made but not put in place is not read (it is no ``*.db``); so no step a fold dies after
    counts a value twice, or loses one."""
    combined: dict[str, tuple[float, float]] = {}
    terms: dict[str, list[float]] = {}
    target = os.path.join(path, archive)
    for name in ([archive] if os.path.exists(target) else []) + sources:
        for key, value, timestamp in _file_values(os.path.join(path, name)):
            if how == "sum":  # the archive's residual (see _exact_total) with its value
                terms.setdefault(key, []).extend((value, timestamp) if name == archive else (value,))
                continue
            seen = combined.get(key)
            if seen is None:
                combined[key] = (value, timestamp)
            elif how == "max":
                combined[key] = (max(seen[0], value), timestamp)
            elif how == "min":
                combined[key] = (min(seen[0], value), timestamp)
            elif timestamp > seen[1]:  # mostrecent: as the merge picks, a later timestamp wins
                combined[key] = (value, timestamp)
    combined.update((key, _exact_total(values)) for key, values in terms.items())
    new, intent = target + ".new", target + _INTENT
    _unlink(new)
    _write_sample_file(new, combined)
    with open(intent + ".new", "w", encoding="utf-8") as file:
        json.dump({"inode": os.stat(new).st_ino, "sources": sources}, file)
    os.replace(intent + ".new", intent)
    os.replace(new, target)
    for name in sources:
        _unlink(os.path.join(path, name))
    os.remove(intent)


def _write_sample_file(path: str, entries: dict[str, tuple[float, float]]) -> None:
    """Write ``entries`` (key -> value, timestamp) as a sample file in ``MmapedDict``'s format, with plain writes.
    Not through ``MmapedDict``: it grows its file with ``truncate`` (no blocks taken) and writes it through ``mmap``,
    so on a full disk the write was a SIGBUS, which killed the process folding (gunicorn's master at a worker's
    exit, a worker at a scrape) instead of an ``OSError`` that leaves the sources to the next fold."""
    parts = [b""]
    used = 8
    for key, (value, timestamp) in entries.items():
        encoded = key.encode("utf-8")
        padded = encoded + b" " * (8 - (len(encoded) + 4) % 8)
        entry = struct.pack(f"i{len(padded)}sdd", len(encoded), padded, value, timestamp)
        parts.append(entry)
        used += len(entry)
    parts[0] = struct.pack("ii", used, 0)
    try:
        with open(path, "wb") as file:
            for part in parts:
                file.write(part)
    except BaseException:
        _unlink(path)  # a part written on a full disk: its blocks back to the disk now
        raise


def _exact_sum(values: list[float]) -> float:
    """The sum of ``values`` correctly rounded (``math.fsum``): the same float whatever their order or grouping. The
    merge added the files' values in the order it listed them, and a fold grouped some first: the same counts
    summed to floats a last bit apart, and a histogram's ``_sum`` that moved down between two scrapes with no new
    observation read to Prometheus as a counter reset. Where the exact sum overflows (or holds both infinities) it
    is what adding them gives: an infinity, or NaN."""
    try:
        return math.fsum(values)
    except (OverflowError, ValueError):
        return sum(values, 0.0)


def _exact_total(values: list[float]) -> tuple[float, float]:
    """``values`` summed as an archive keeps them: their sum correctly rounded, and what that rounding left out (a
    float the size of half its last bit at most, in the timestamp of the entry, which the merge reads for no summed
    kind: prometheus_client writes 0 there). Their sum is then the two together, exactly, while it is under 2^54
    times the smallest of them (nonzero): its digits fit in two floats'. A fold that kept the rounded sum alone lost
    that part, and the merged value depended on which files it had folded."""
    total = _exact_sum(values)
    return total, (_exact_sum([*values, -total]) if math.isfinite(total) else 0.0)


def fold_dead_process_files(pids: list[int], path: str) -> int:
    """Fold the sample files of the exited worker processes ``pids`` in ``path`` into this process's archives, one
    per kind of file (``counter_archive-<pid>.db``...), and remove them; returns how many were folded. For
    gunicorn's master (:func:`aiwatch.gunicorn.child_exit`): every worker recycled by ``max_requests`` (or crashed)
    left its files, each ``/metrics`` merged one more set, and a scrape slowed for as long as the master ran. The
    merged values do not change: counters and histograms keep their counts (no reset), the ``mostrecent``, ``max``
    and ``min`` gauges their merged values (see :data:`_FOLDS`). Its ``live*`` gauges are not folded (child_exit
    removes them, as ``mark_process_dead``), its ``all`` gauges stay.

    Under the directory's fold lock (``flock``), which aiwatch's ``/metrics`` holds shared while it reads the files:
    a scrape sees every value once, before or after the fold. A process still running under one of ``pids`` (the pid
    reused already) keeps its files. The pids whose files could not be folded are retried at the next call: the
    lock not had in :data:`FOLD_LOCK_SECONDS` (a TimeoutError), or an error (raised). Nothing is folded without
    ``flock`` (not POSIX) or where the lock file cannot be made."""
    _pending.update(pids)
    master = os.getpid()
    with _fold_lock(path, exclusive=True) as held:
        if held is None:
            return 0
        if not held:
            raise TimeoutError(f"the fold lock of {path} was not had in {FOLD_LOCK_SECONDS:g}s (a scrape holding it): "
                               f"{len(_pending)} exited worker(s)' files are left to fold at the next exit")
        folded = _fold_locked(path, {pid for pid in _pending if not _running(pid)}, master)
        _pending.clear()
    return folded


def _fold_locked(path: str, dead: set[int], owner: int) -> int:
    """Under the fold lock held exclusively: finish what an interrupted fold left, then fold the foldable files of
    the pids ``dead`` into ``owner``'s archives; returns how many files were folded."""
    _finish_interrupted(path)
    gone = {str(pid) for pid in dead}
    by_kind: dict[str, list[str]] = {}
    for name in sorted(os.listdir(path)):
        match = _FOLDED_FILE.fullmatch(name)
        if match and match.group(2) in gone:
            by_kind.setdefault(match.group(1), []).append(name)
    for kind, sources in by_kind.items():
        _fold_into(path, _archive_name(kind, owner), _FOLDS[kind], sources)
    return sum(len(sources) for sources in by_kind.values())


def fold_dead_at_scrape(path: str) -> int:
    """Fold the sample files of processes no longer running into the archives of this process's parent
    (``counter_archive-<parent pid>.db``...), as :func:`fold_dead_process_files` does in gunicorn's master; returns
    how many files were folded. Run by ``/metrics`` before each merge, for the servers that have no exit hook
    (``uvicorn --workers`` recycling workers with ``--limit-max-requests`` or respawning crashed ones, Hypercorn,
    gunicorn without :func:`aiwatch.gunicorn.child_exit`): each exited worker left a set of files that every scrape
    merged until the next start. The parent is the server's supervisor (gunicorn's master: its archives are the
    ones ``child_exit`` folds into), which outlives the worker folding: a worker's own archive would be left behind
    at its exit. Nothing is done when no file of a dead pid is found (a pid check per process that wrote the
    directory), nor when the lock is not had at once (another worker folding, or a scrape merging: the next scrape
    folds), nor when this process writes no sample file of ``path`` (as :func:`drop_dead_live_gauges`, whose pid
    namespace caveat applies here too, with ``AIWATCH_MULTIPROCESS_DROP_DEAD=off`` turning both off). The pids are
    checked again under the lock."""
    try:
        names = os.listdir(path)
    except OSError:  # drop_dead_live_gauges, run just before, counted it
        return 0
    pids = {int(match.group(2)) for name in names if (match := _FOLDED_FILE.fullmatch(name))}
    if not any(not _running(pid) for pid in pids) or not _holds_own_sample_file(path):
        return 0
    with _fold_lock(path, exclusive=True, wait=False) as held:
        if not held:
            return 0
        return _fold_locked(path, {pid for pid in pids if not _running(pid)}, os.getppid())


#: the live gauges' sample files (``livesum``, ``livemin``, ``livemax``...): what prometheus_client's
#: ``mark_process_dead(pid)`` removes, and its live modes then pass over
_LIVE_GAUGE_FILE = re.compile(r"gauge_live[a-z]*_([0-9]+)\.db")


#: the files this process maps, with the mapping's permissions (Linux)
_MAPPED_FILES = "/proc/self/maps"


#: (pid, directory) this process was found to map its own sample file writable in: prometheus_client keeps its
#: values mapped for the process's life, so the answer stays; a forked child has another pid, and looks again
_WRITER_OF: set[tuple[int, str]] = set()


def _holds_own_sample_file(path: str) -> bool:
    """Whether this process maps a sample file of ``path`` named with its own pid shared and writable, as
    prometheus_client's values map theirs (an ``MmapedDict``: ``mmap`` with ``ACCESS_WRITE``, kept while the process
    runs). A name alone proves nothing: pid numbers repeat across pid namespaces (a sidecar exporter that is pid 2
    finds the ``counter_2.db`` of the app container's worker 2); nor does an open descriptor: a scrape's merge opens
    every process's file to read it, worker 2's too, and a descriptor's number is reused at once (read by number,
    a closed file's number already named a socket). A mapping is no descriptor: it stays what it was mapped as.
    ``False`` where the mappings cannot be read (not Linux)."""
    directory = os.path.realpath(path)
    pid = os.getpid()
    if (pid, directory) in _WRITER_OF:
        return True
    own = str(pid)
    try:
        with open(_MAPPED_FILES, encoding="utf-8", errors="replace") as mapped:
            lines = mapped.readlines()
    except OSError:
        return False
    for line in lines:
        # address, permissions, offset, device, inode, path (which may hold spaces; a deleted file's ends in
        # " (deleted)", and matches no name)
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or not fields[1].startswith("rw") or fields[1][3:4] != "s":
            continue
        head, name = os.path.split(fields[5].rstrip("\n"))
        if head == directory and (match := _SAMPLE_FILE.fullmatch(name)) and match.group(1) == own:
            _WRITER_OF.add((pid, directory))
            return True
    return False


def _remove_live_gauges(path: str, names: list[str], failed: list[tuple[str, OSError]]) -> int:
    """Remove ``names`` from ``path``; a file already gone (another process removed it first) is no error, one that
    cannot be removed goes to ``failed``; returns how many were removed."""
    removed = 0
    for name in names:
        try:
            os.remove(os.path.join(path, name))
        except FileNotFoundError:
            continue
        except OSError as exc:
            failed.append((name, exc))
            continue
        removed += 1
    return removed


def drop_dead_live_gauges(path: str) -> int:
    """Remove from ``path`` the live gauges' sample files of processes no longer running (as prometheus_client's
    ``mark_process_dead`` does for one pid); returns how many. Run before each merge: a server that never calls
    ``mark_process_dead`` for its exited workers (``uvicorn --workers``, hypercorn, gunicorn without
    :func:`aiwatch.gunicorn.child_exit`) left their last values in the live gauges for good, a recycled worker's
    last-sample timestamp (``livemin``) aging as if its loop were stuck.

    Only when this process maps a sample file of ``path`` named with its own pid writable, as prometheus_client's
    values do (read from ``/proc/self/maps``; where that cannot be read, not Linux, nothing is removed): then it
    writes the directory, and is most likely in the workers' pid namespace. A process that writes nothing there (an
    exporter sharing the volume, whatever its pid number, even while a scrape's merge reads a file of its pid
    number) removes nothing. Not guarded: a process that writes the directory too but runs in another pid
    namespace than the other writers (a sidecar that records its own metrics there) reads their pids in its own
    namespace, and removes the live gauges of running workers whose pid it does not see; turn it off there with
    ``AIWATCH_MULTIPROCESS_DROP_DEAD=off``. A file that cannot be removed is left, and counted once per call as
    aiwatch's error (component ``multiprocess``)."""
    try:
        names = os.listdir(path)
    except OSError as exc:
        record_error("multiprocess", exc)
        return 0
    if not _holds_own_sample_file(path):
        return 0
    gone = [name for name in names
            if (match := _LIVE_GAUGE_FILE.fullmatch(name)) and not _running(int(match.group(1)))]
    failed: list[tuple[str, OSError]] = []
    removed = _remove_live_gauges(path, gone, failed)
    if failed:
        first, error = failed[0]
        record_error("multiprocess", OSError(f"{len(failed)} live gauge file(s) of processes no longer running could "
                                             f"not be removed, the first {first}: {error}"))
    return removed


def remove_live_gauges(pid: int, path: str) -> None:
    """Remove the live gauges' sample files of ``pid`` from ``path``, as prometheus_client's ``mark_process_dead``,
    but a file another process removed first (a scrape's :func:`drop_dead_live_gauges`) is no error; raises the
    first other OSError, after trying the rest."""
    own = str(pid)
    names = [name for name in os.listdir(path)
             if (match := _LIVE_GAUGE_FILE.fullmatch(name)) and match.group(1) == own]
    failed: list[tuple[str, OSError]] = []
    _remove_live_gauges(path, names, failed)
    if failed:
        raise failed[0][1]


def drop_dead_enabled() -> bool:
    """Whether ``/metrics`` drops the live gauges of processes gone (:func:`drop_dead_live_gauges`):
    ``AIWATCH_MULTIPROCESS_DROP_DEAD``: on by default, off for ``off`` (or ``false``, ``0``, ``no``); any other value
    is a ValueError."""
    return MULTIPROCESS_DROP_DEAD.switch()


def check_serving_settings() -> None:
    """Raise the ValueError a bad ``AIWATCH_MULTIPROCESS_DROP_DEAD`` gives in multiprocess mode, for
    :func:`aiwatch.instrument` and the WSGI middleware to call when the app is instrumented: a middleware makes its
    ``/metrics`` app at the first scrape, which would then fail at every one; and a ValueError when that app would
    serve nothing (:func:`multiprocess_unservable`)."""
    if multiprocess_enabled():
        drop_dead_enabled()
        problem = multiprocess_unservable()
        if problem is not None:
            raise ValueError(problem)


class _MergedCollector(_multiprocess.MultiProcessCollector):
    """prometheus_client's merge of every process's sample files, less the live gauges of processes gone
    (:func:`drop_dead_live_gauges`), their other files folded first (:func:`fold_dead_at_scrape`), at each
    collection unless ``AIWATCH_MULTIPROCESS_DROP_DEAD`` is off (read
    here: a bad value is an error when the app is made, not at each scrape); what this process's finalizers left to
    record (:mod:`aiwatch.deferred`) is recorded first. The files are read under the fold lock, shared
    (:func:`fold_dead_process_files`): else a fold in gunicorn's master, moving a dead worker's counts into its
    archive meanwhile, could have them read twice or not at all, or fail the scrape (a counter file removed between
    the merge's listing and its read)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._drop_dead = drop_dead_enabled()
        super().__init__(registry)  # type: ignore[no-untyped-call]

    def collect(self) -> Any:
        run_every_deferred()  # this worker's dropped responses, into its sample file before the merge reads it
        if self._drop_dead:
            drop_dead_live_gauges(self._path)
            try:
                fold_dead_at_scrape(self._path)
            except Exception as exc:  # a fold that failed (a full disk) leaves the files to merge as they are
                record_error("multiprocess", exc)
        with _fold_lock(self._path, exclusive=False) as held:
            if held is False:
                record_error("multiprocess", TimeoutError(
                    f"the fold lock of {self._path} was not had in {FOLD_LOCK_SECONDS:g}s: merged without it"))
            try:
                return self.merge(_merged_files(self._path), accumulate=True)
            except Exception as exc:
                return self._merge_readable(exc)

    @staticmethod
    def merge(files: list[str], accumulate: bool = True) -> Any:
        """prometheus_client's merge of ``files``, each summed value (counters, histograms, summaries, ``sum``
        gauges) the exact sum of its files' values and of the archives' residuals, correctly rounded
        (:func:`_exact_sum`): the same float whatever the files' order in the listing and whichever were folded."""
        read = _multiprocess.MultiProcessCollector._read_metrics(files)  # type: ignore[no-untyped-call]
        _add_archive_residuals(read, files)
        for metric in read.values():
            _sum_exactly(metric)
        return _multiprocess.MultiProcessCollector._accumulate_metrics(  # type: ignore[no-untyped-call]
            read, accumulate)

    def _merge_readable(self, failure: Exception) -> Any:
        """The merge of the files that read whole, after a merge of them all failed: counted as aiwatch's error
        (component ``multiprocess``), naming the files left out, and the scrape answered. A file made unreadable
        (a corrupt one) would otherwise fail every scrape, and Prometheus see the target down."""
        readable: list[str] = []
        unreadable: list[tuple[str, Exception]] = []
        for file in _merged_files(self._path):
            try:
                self.merge([file], accumulate=True)
            except Exception as exc:
                unreadable.append((os.path.basename(file), exc))
                continue
            readable.append(file)
        left_out = (f"{len(unreadable)} unreadable sample file(s) left out, the first {unreadable[0][0]}: "
                    f"{unreadable[0][1]!r}") if unreadable else "every file read at the second try"
        record_error("multiprocess", RuntimeError(f"the merge of {self._path} failed ({failure!r}): {left_out}"))
        return self.merge(readable, accumulate=True)


#: the kinds of sample file whose values the merge adds up
_SUMMED = {"counter", "histogram", "summary"}
_SUMMED_GAUGES = {"sum", "livesum"}


def _add_archive_residuals(metrics: dict[str, Metric], files: list[str]) -> None:
    """Add to ``metrics`` (prometheus_client's read of ``files``, each value a sample) the residual each summed
    archive of ``files`` keeps beside its values (:func:`_exact_total`), as one more sample of the series."""
    for file in files:
        archive = _ARCHIVE_FILE.fullmatch(os.path.basename(file))
        if archive is None or _FOLDS.get(archive.group(1)) != "sum":
            continue
        for key, _, residual in _file_values(file):
            metric_name, name, labels, _ = json.loads(key)
            if residual and metric_name in metrics:  # labels as the read keeps them: sorted pairs
                pairs: Any = tuple(sorted(labels.items()))
                metrics[metric_name].samples.append(Sample(name, pairs, residual))


def _sum_exactly(metric: Metric) -> None:
    """Replace the samples of a summed metric that its files gave for one series with one, their exact sum
    (:func:`_exact_sum`); prometheus_client's accumulation then adds that one to 0. A ``sum`` gauge's pid label
    goes, as that accumulation drops it."""
    gauge = metric.type == "gauge"
    if metric.type not in _SUMMED and not (gauge and getattr(metric, "_multiprocess_mode", "") in _SUMMED_GAUGES):
        return
    series: dict[tuple[str, Any], list[float]] = {}
    for sample in metric.samples:
        labels = tuple(pair for pair in sample.labels if pair[0] != "pid") if gauge else sample.labels
        series.setdefault((sample.name, labels), []).append(sample.value)
    metric.samples = [Sample(name, labels, _exact_sum(values)) for (name, labels), values in series.items()]


class _MergedRegistry(CollectorRegistry):
    """The registry of the merged view. ``/metrics?name[]=...`` asks for a ``restricted_registry``, which
    prometheus_client builds from the names its collectors describe: the merge describes none (its names are in
    the files), so every such scrape answered an empty 200. Here the merged metrics are restricted by their
    samples' names, as prometheus_client restricts a described collector's."""

    def restricted_registry(self, names: Any) -> Any:
        return _Restricted(self, frozenset(names))


class _Restricted:
    def __init__(self, registry: CollectorRegistry, names: frozenset[str]) -> None:
        self._registry, self._names = registry, names

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            samples = [sample for sample in metric.samples if sample.name in self._names]
            if samples:
                restricted = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                restricted.samples = samples
                yield restricted


def serving_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry to expose: in multiprocess mode a fresh one collecting every worker's files, where the live
    gauges of the workers no longer running are dropped at each scrape (:func:`drop_dead_live_gauges`); a bad
    ``AIWATCH_MULTIPROCESS_DROP_DEAD`` is a ValueError."""
    if multiprocess_enabled():
        merged = _MergedRegistry()
        _MergedCollector(merged)
        return merged
    return registry if registry is not None else prometheus_client.REGISTRY


class _DeferredFirst:
    """What aiwatch's exposition apps hand prometheus_client's: ``registry``, whose ``/metrics?name[]=...`` scrapes
    record what finalizers left (:mod:`aiwatch.deferred`) and run the scrape checks before reading, as a full scrape
    does. prometheus_client's restricted registry collects only the collectors that describe a name asked for, and
    :class:`~aiwatch.deferred.RunDeferredOnScrape` describes none: such a scrape recorded nothing of it, and a
    Prometheus whose scrape config asks for some names only never saw the dropped responses of an idle process.
    (The merged view of multiprocess mode runs them at every collection already.)"""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        return iter(self._registry.collect())

    def restricted_registry(self, names: Any) -> Any:
        return _AfterDeferred(self._registry.restricted_registry(names))


class _AfterDeferred:
    def __init__(self, restricted: Any) -> None:
        self._restricted = restricted

    def collect(self) -> Iterator[Metric]:
        run_every_deferred()
        yield from self._restricted.collect()


def _exposed(registry: CollectorRegistry | None) -> Any:
    """The registry an exposition app serves: :func:`serving_registry`'s, whose restricted scrapes run the deferred
    work first (:class:`_DeferredFirst`)."""
    serving = serving_registry(registry)
    return serving if isinstance(serving, _MergedRegistry) else _DeferredFirst(serving)


def make_asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """An ASGI app serving the metrics of ``registry`` (default: the global registry). Request headers and a query
    string that are not UTF-8 are left out before prometheus_client's app reads them: it decodes them as UTF-8, and
    answered a request with a non-UTF-8 ``Accept`` header 500, logging a traceback per request any client could
    send. An ``Accept-Encoding`` that refuses gzip is left out too (:func:`gzip_refused`)."""
    app = prometheus_client.make_asgi_app(_exposed(registry))

    async def metrics_app(scope: Any, receive: Any, send: Any) -> None:
        await app(_utf8_only(scope), receive, send)

    return metrics_app


def _utf8_only(scope: Any) -> Any:
    """``scope``, or a copy without its headers that are not UTF-8 bytes nor its ``Accept-Encoding`` where that
    refuses gzip, and with an empty query string for one that is not UTF-8."""
    given = scope.get("headers") or []
    headers = given if isinstance(given, list) else list(given)  # an iterable is read once: the copy gets it
    kept = [(name, value) for name, value in headers if _is_utf8(name) and _is_utf8(value)]
    encodings = ",".join(value.decode() for name, value in kept if name.lower() == b"accept-encoding")
    if encodings and gzip_refused(encodings):
        kept = [(name, value) for name, value in kept if name.lower() != b"accept-encoding"]
    query = scope.get("query_string", b"")
    if headers is given and len(kept) == len(headers) and _is_utf8(query):
        return scope
    return {**scope, "headers": kept, "query_string": query if _is_utf8(query) else b""}


def gzip_refused(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` value refuses gzip: weighs it (or ``x-gzip``, or else ``*``) ``q=0``, which
    RFC 9110 (section 12.5.3) says means "not acceptable". prometheus_client gzips for any value naming gzip, its
    weight unread, so a scraper that refused gzip got it; what it is not told, it serves uncompressed. A weight that
    is no number is not read as a refusal."""
    named: float | None = None
    anything: float | None = None
    for member in accept_encoding.split(","):
        coding, *parameters = (part.strip() for part in member.split(";"))
        weight = 1.0
        for parameter in parameters:
            key, _, value = parameter.partition("=")
            if key.strip().lower() == "q":
                try:
                    weight = float(value.strip())
                except ValueError:
                    weight = 1.0
        coding = coding.lower()
        if coding in ("gzip", "x-gzip") and named is None:
            named = weight
        elif coding == "*" and anything is None:
            anything = weight
    given = named if named is not None else anything
    return given is not None and given <= 0.0


def _is_utf8(data: object) -> bool:
    if not isinstance(data, bytes):
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def make_wsgi_app(registry: CollectorRegistry | None = None) -> Any:
    """A WSGI app serving the metrics of ``registry`` (default: the global registry); an ``Accept-Encoding`` that
    refuses gzip (:func:`gzip_refused`) is not passed on to prometheus_client's app, which would gzip for it."""
    app = prometheus_client.make_wsgi_app(_exposed(registry))

    def metrics_app(environ: dict[str, Any], start_response: Any) -> Any:
        encodings = environ.get("HTTP_ACCEPT_ENCODING")
        if isinstance(encodings, str) and gzip_refused(encodings):
            environ = {key: value for key, value in environ.items() if key != "HTTP_ACCEPT_ENCODING"}
        return app(environ, start_response)

    return metrics_app


def start_http_server(port: int, addr: str = "127.0.0.1", registry: CollectorRegistry | None = None) -> Any:
    """Serve the metrics on ``addr:port`` from a daemon thread (the WSGI app of :func:`make_wsgi_app`); returns
    (server, thread).

    In multiprocess mode (:func:`multiprocess_enabled`) every worker of the app runs this at import, so each binds
    the port with ``SO_REUSEPORT``: the kernel hands each scrape to one of them, and each serves the merged view.
    Bound alone, every worker but the first failed with "Address already in use", and gunicorn stopped
    ("Worker failed to boot")."""
    family, host = _best_family(addr, port)

    class SharedPortServer(ThreadingWSGIServer):
        allow_reuse_port = multiprocess_enabled()
        address_family = family

    server = make_server(host, port, make_wsgi_app(registry), SharedPortServer, handler_class=_QuietHandler)
    thread = _serve(server)
    from aiwatch.prefork import fork_hooks_problem, uwsgi_master

    if uwsgi_master() and fork_hooks_problem() is None:  # as gunicorn's pre_fork: the workers serve it
        hand_over_http_servers()
    return server, thread


def _serve(server: Any) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, name="aiwatch-metrics", daemon=True)
    thread.start()
    _serving[:] = [(s, t) for s, t in _serving if t.is_alive()]  # a server its owner shut down is not kept
    _serving.append((server, thread))
    return thread


#: The servers :func:`start_http_server` serves from a thread of this process, with the thread.
_serving: list[tuple[Any, threading.Thread]] = []
#: The servers this process stopped serving for the workers it forks (:func:`hand_over_http_servers`).
_handed_over: list[Any] = []


def hand_over_http_servers() -> None:
    """Stop serving, in this process, the servers :func:`start_http_server` started here, each forked child serving
    them instead (on the listening socket it inherits, from a thread of its own started as it is forked).
    ``aiwatch.gunicorn``'s ``pre_fork`` calls it in a master that imported the app (``--preload``), and
    :func:`start_http_server` in uWSGI's master (with its fork hooks, which start the workers' threads): that master
    served its own registry, which no request reaches (without ``PROMETHEUS_MULTIPROC_DIR``: every scrape read 0
    requests for ever), while the workers that serve the requests served none. Waits for each server's accept loop
    to end (its poll: half a second at most)."""
    while _serving:
        server, thread = _serving.pop()
        if thread.is_alive():  # one its owner shut down (and closed) is nobody's to serve
            server.shutdown()
            _handed_over.append(server)


def _serve_handed_over_in_child() -> None:
    # The serving threads are the parent's: the child has none. The servers the parent handed over are served here,
    # once (the child's own children, a subprocess with preexec_fn among them, are not handed them).
    _serving.clear()
    servers = list(_handed_over)
    _handed_over.clear()
    for server in servers:
        try:
            _serve(server)
        except Exception as exc:  # no thread: the rest of the child goes on
            record_error("multiprocess", exc)


at_fork_in_child(_serve_handed_over_in_child)


def _best_family(addr: str, port: int) -> tuple[socket.AddressFamily, str]:
    """The address family and host to bind ``addr`` with (an IPv6 address needs AF_INET6), as prometheus_client's
    ``start_http_server`` picks them."""
    family, _, _, _, sockaddr = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    return family, str(sockaddr[0])


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape on stderr (prometheus_client's server logs none either)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass

"""Local cache in a diskcache (SQLite, WAL) directory, safe against planted pickles.

diskcache's default `Disk` pickles any key or value that is not str/bytes/int/float and unpickles
such rows on read, so anyone able to write into the directory could run code in the proxy
(CVE-2025-69872, upstream-gitlab-api.md §8). Here:

- `BytesOnlyDisk` stores only str keys and bytes values and refuses to decode any other row;
  a refused row reads as a miss, is logged and deleted;
- the directory is created 0700 and must not be group/world-writable or someone else's;
- a database SQLite calls corrupt is set aside at open (the cache starts empty), so a crash
  cannot keep the proxy from starting;
- a full volume does not wedge it (`_Room`): the WAL is checkpointed before it can take more
  than a sixteenth of the volume, a small reserve file keeps room for the clean-up, and a write
  that fails with "database or disk is full" culls expired entries, folds the WAL back
  (`wal_checkpoint(TRUNCATE)`) and is tried once more (at most once per `_ROOM_EVERY` seconds).

Gets run on the event loop (a WAL read takes microseconds); writes go to the executor.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import functools
import os
import re
import shutil
import sqlite3
import stat
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import diskcache
import structlog
from diskcache.core import DBNAME, MODE_BINARY, MODE_RAW, UNKNOWN

from proxy.cache.base import StorageError, check_key, check_required_ttl, check_ttl, check_value

log = structlog.get_logger(__name__)

T = TypeVar("T")

# Seconds SQLite waits for a lock before diskcache gives up. Short, because gets run on the event
# loop; writes pass retry=True and simply try again.
_SQLITE_TIMEOUT = 1.0
_RESERVE = f"{DBNAME}-reserve"  # room kept free for the clean-up of a full volume
_DB_FILES = (DBNAME, f"{DBNAME}-wal", f"{DBNAME}-shm", f"{DBNAME}-journal", _RESERVE)
_PAGE = 4096  # SQLite's page size here
# SQLite checkpoints the WAL after 1,000 pages (4 MiB) by default; on a small volume a WAL that
# size fills it before any checkpoint, and a full volume cannot take the checkpoint either.
_WAL_PAGES = 1000
_RESERVE_BYTES = 1 << 20  # at most; never more than an eighth of the volume
_ROOM_EVERY = 5.0  # seconds between two clean-ups of a full volume, at most
_ROOM_SECONDS = 2.0  # one clean-up's bound on culling expired entries
_CULL_CHUNK = 100  # expired rows deleted per transaction
# diskcache.Disk.filename(): "ab/cd/<28 hex>.val" under the cache directory.
_VALUE_FILE = re.compile(r"[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{28}\.val")
_VALUE_DIR = re.compile(r"[0-9a-f]{2}")
_COUNTER = re.compile(rb"-?[0-9]+")


class UnsafeRow(ValueError):
    """A row not written as a raw str key / bytes value; never decoded, read as a miss."""


class BytesOnlyDisk(diskcache.Disk):
    """diskcache serialisation limited to str keys and bytes values: pickle is refused both ways."""

    def put(self, key: object) -> tuple[str, bool]:
        return check_key(key), True

    def get(self, key: object, raw: bool) -> str:
        if not raw or type(key) is not str:
            raise UnsafeRow("cache row with a non-str (possibly pickled) key")
        return key

    def store(
        self, value: object, read: bool, key: object = UNKNOWN
    ) -> tuple[int, int, str | None, Any]:
        if read:
            raise TypeError("file-like cache values are not supported; pass bytes")
        return super().store(check_value(value), False, key=key)

    def fetch(self, mode: int, filename: str | None, value: object, read: bool) -> bytes:
        if read:
            raise TypeError("file-like cache reads are not supported")
        if mode == MODE_RAW and type(value) is bytes:
            return value
        if mode == MODE_BINARY and filename is not None and _VALUE_FILE.fullmatch(filename):
            return super().fetch(mode, filename, None, False)
        raise UnsafeRow(f"cache row in mode {mode} is not raw bytes (possibly pickle)")

    def remove(self, file_path: str) -> None:
        # A planted row could name any path; only ever delete diskcache's own value files.
        if _VALUE_FILE.fullmatch(file_path):
            super().remove(file_path)


class DiskStorage:
    """`Storage` in one local directory (not NFS); safe for several processes on one host."""

    name = "disk"

    def __init__(
        self,
        directory: Path,
        *,
        size_limit: int,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self._directory = Path(directory)
        self._size_limit = size_limit
        # By default writes go through one thread of our own: SQLite admits one writer at a
        # time anyway, and close() can then close that thread's connection too.
        self._own_executor = (
            concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="dora-disk-cache")
            if executor is None
            else None
        )
        self._executor = executor or self._own_executor
        self._pending: list[tuple[tuple[str, bytes, float | None], asyncio.Future[None]]] = []
        self._flushing = False
        self._flusher: asyncio.Future[None] | None = None
        _prepare_directory(self._directory)
        self._cache: diskcache.Cache | None = _open_cache(self._directory, size_limit)
        self._room = _Room(self._directory)
        self._room.reserve()

    async def get(self, key: str) -> bytes | None:
        check_key(key)
        cache = self._opened()
        try:
            with self._errors():
                return cache.get(key)
        except UnsafeRow as exc:
            log.warning("cache.undecodable", backend=self.name, key=key, reason=str(exc))
            await self._run(cache.delete, key, retry=True)
            return None

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        return [await self.get(key) for key in keys]

    async def set(self, key: str, value: bytes, ttl: float | None) -> None:
        """Group commit: sets that arrive while a write runs are committed together in the
        next transaction (one SQLite commit costs ~200 us; a row inside one ~35 us). Each
        caller still returns only once its own row is committed."""
        cache = self._opened()
        entry = (check_key(key), check_value(value), check_ttl(ttl))
        done = asyncio.get_running_loop().create_future()
        self._pending.append((entry, done))
        if not self._flushing:
            self._flushing = True
            self._flusher = asyncio.ensure_future(self._flush(cache))
        await done

    async def _flush(self, cache: diskcache.Cache) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                try:
                    await self._write(_set_many, cache, [entry for entry, _ in batch])
                except Exception as exc:  # every waiter of the batch sees the failure
                    for _, done in batch:
                        if not done.done():
                            done.set_exception(exc)
                else:
                    for _, done in batch:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._flushing = False

    async def set_many(self, items: Sequence[tuple[str, bytes, float | None]]) -> None:
        checked = [(check_key(k), check_value(v), check_ttl(t)) for k, v, t in items]
        if checked:
            await self._write(_set_many, self._opened(), checked)

    async def add(self, key: str, value: bytes, ttl: float) -> bool:
        cache = self._opened()
        return await self._write(
            cache.add,
            check_key(key),
            check_value(value),
            expire=check_required_ttl(ttl),
            retry=True,
        )

    async def delete(self, key: str) -> None:
        await self._write(self._opened().delete, check_key(key), retry=True)

    async def incr(self, key: str) -> int:
        return await self._write(_incr, self._opened(), check_key(key))

    async def clear(self) -> int:
        return await self._write(self._opened().clear, retry=True)

    async def stats(self) -> dict[str, int | str]:
        cache = self._opened()
        entries, volume = await self._run(lambda: (len(cache), cache.volume()))
        return {
            "backend": self.name,
            "entries": entries,  # includes expired rows not yet culled
            "bytes": volume,
            "size_limit": self._size_limit,
        }

    async def check_writable(self) -> None:
        await self._write(_round_trip, self._opened())

    async def close(self) -> None:
        cache, self._cache = self._cache, None
        if cache is None:
            return
        cache.close()  # the event loop thread's connection (gets)
        if self._own_executor is not None:
            # Queued writes finish first; then the last connection closes and SQLite folds the
            # WAL back into cache.db. Connections in a caller's executor close when the Cache is
            # garbage-collected.
            await asyncio.get_running_loop().run_in_executor(self._own_executor, cache.close)
            self._own_executor.shutdown(wait=False)

    def _opened(self) -> diskcache.Cache:
        if self._cache is None:
            raise StorageError("disk cache is closed")
        return self._cache

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except (sqlite3.Error, diskcache.Timeout, OSError) as exc:
            raise StorageError(f"disk cache in {self._directory}: {exc}") from exc

    async def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A write; if the volume is full, make room (rate-limited) and try it once more."""
        return await self._run(self._room.retried, self._opened(), fn, *args, **kwargs)

    async def _run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        with self._errors():
            return await loop.run_in_executor(
                self._executor, functools.partial(fn, *args, **kwargs)
            )


class _Room:
    """Keeps a full volume from wedging the cache (runs in the writer's thread).

    On a volume that SQLite's files filled, expired entries are never culled (culling is a
    write) and the WAL is never folded back (a checkpoint grows cache.db first), so the cache
    would stay full forever. Three things prevent that: the WAL limit set at open
    (`_wal_pages`), a reserve file released just before a clean-up, and the clean-up itself.
    """

    def __init__(self, directory: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._reserve_tried = -float("inf")
        self.reserved = False  # the reserve file is in place
        self.cleanups = 0  # clean-ups run since start (tests, logs)

    def reserve(self) -> None:
        """Create the reserve file if it is missing (best effort: a full volume has no room)."""
        self._reserve_tried = self._clock()
        size = min(_RESERVE_BYTES, _volume_bytes(self.directory) // 8)
        path = self.directory / _RESERVE
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            self.reserved = True
            return
        except OSError:
            return
        try:
            with os.fdopen(fd, "wb") as reserve:
                reserve.write(b"\0" * size)  # written, not sparse: the blocks are really taken
        except OSError:  # no room yet: tried again after a later write
            path.unlink(missing_ok=True)
            return
        self.reserved = True

    def retried(self, cache: diskcache.Cache, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
        """`fn(*args, **kw)`; on a full volume, clean up (if due) and call it once more."""
        try:
            result = fn(*args, **kw)
        except (sqlite3.OperationalError, OSError) as exc:
            if not _is_full(exc) or not self._due():
                raise
            self.clean_up(cache, exc)
            result = fn(*args, **kw)
        if not self.reserved and self._clock() - self._reserve_tried >= _ROOM_EVERY:
            self.reserve()  # room came back since the clean-up used it
        return result

    def _due(self) -> bool:
        with self._lock:
            now = self._clock()
            if now - self._last < _ROOM_EVERY:
                return False
            self._last = now
            return True

    def clean_up(self, cache: diskcache.Cache, cause: BaseException) -> None:
        """Release the reserve, fold the WAL back, cull expired entries (bounded), fold again,
        take the reserve back. Each step may fail on a volume that is still full."""
        self.cleanups += 1
        (self.directory / _RESERVE).unlink(missing_ok=True)
        self.reserved = False
        deadline = self._clock() + _ROOM_SECONDS
        removed, failed = 0, []
        # Deleting rows frees pages only once a checkpoint folds them back: alternate the two
        # (a few rounds at most, within the deadline) while each round makes progress.
        for _ in range(3):
            folded = _attempt(_checkpoint, cache, failed)
            culled = _attempt(_cull_expired, cache, deadline, self._clock, failed) or 0
            removed += culled
            if (folded and not culled) or self._clock() >= deadline:
                break
        _attempt(_checkpoint, cache, failed)
        self.reserve()
        log.warning(
            "cache_volume_full",
            backend="disk",
            directory=str(self.directory),
            error=str(cause),
            expired_removed=removed,
            cleanup_errors=failed[:3],
            wal_bytes=_size(self.directory / f"{DBNAME}-wal"),
            free_bytes=_free_bytes(self.directory),
            action="culled expired entries and checkpointed the WAL; retrying the write once",
        )


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, sqlite3.OperationalError):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "is full" in str(
            exc
        )
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _checkpoint(cache: diskcache.Cache) -> None:
    """Copy the WAL into cache.db and truncate it to zero bytes (needs no busy readers)."""
    cache._sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def _attempt(fn: Callable[..., T], *args: Any) -> T | None:
    """`fn(*args[:-1])`, its failure noted in the list `args[-1]` instead of raised."""
    *call, failed = args
    try:
        return fn(*call)
    except (sqlite3.Error, diskcache.Timeout, OSError) as exc:
        failed.append(f"{fn.__name__.strip('_')}: {exc or type(exc).__name__}")
        return None


def _cull_expired(cache: diskcache.Cache, deadline: float, clock: Callable[[], float]) -> int:
    """`Cache.expire()` in chunks, one transaction each, until `deadline` (diskcache's own has
    no bound; a large cache could hold the writer for minutes). A chunk the volume has no room
    for is halved after a checkpoint (a one-row delete needs a few pages of WAL)."""
    select = (
        "SELECT rowid, filename FROM Cache WHERE expire_time IS NOT NULL AND expire_time < ? "
        "ORDER BY expire_time LIMIT ?"
    )
    removed, chunk = 0, _CULL_CHUNK
    while clock() < deadline:
        try:
            # retry=False: a lock held elsewhere raises Timeout after _SQLITE_TIMEOUT
            with cache._transact(retry=False) as (sql, cleanup):
                rows = sql(select, (time.time(), chunk)).fetchall()
                if not rows:
                    break
                ids = ",".join(str(rowid) for rowid, _ in rows)
                sql(f"DELETE FROM Cache WHERE rowid IN ({ids})")
                for _, filename in rows:
                    cleanup(filename)  # value files are removed after the commit
        except sqlite3.OperationalError as exc:
            if not _is_full(exc) or chunk == 1:
                raise
            chunk //= 2
            with contextlib.suppress(sqlite3.Error):
                _checkpoint(cache)
            continue
        removed += len(rows)
    return removed


def _volume_bytes(directory: Path) -> int:
    return _statvfs_bytes(directory, "f_blocks")


def _free_bytes(directory: Path) -> int:
    return _statvfs_bytes(directory, "f_bavail")


def _statvfs_bytes(directory: Path, blocks: str) -> int:
    """`blocks` (a statvfs field counting blocks) of the volume holding `directory`, in bytes;
    0 when it cannot be read."""
    try:
        info = os.statvfs(directory)
    except OSError:
        return 0
    return getattr(info, blocks) * info.f_frsize


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def headroom(directory: Path) -> int:
    """Bytes the disk cache needs beyond `cache_size_limit`: its WAL at most, and the reserve."""
    volume = _volume_bytes(directory)
    return _wal_pages(directory) * _PAGE + min(_RESERVE_BYTES, volume // 8)


def _wal_pages(directory: Path) -> int:
    """SQLite's WAL checkpoint threshold: its default, but never over 1/16 of the volume."""
    return max(16, min(_WAL_PAGES, _volume_bytes(directory) // 16 // _PAGE))


def _set_many(cache: diskcache.Cache, items: list[tuple[str, bytes, float | None]]) -> None:
    """Every row in one SQLite transaction: one commit instead of one per row."""
    with cache.transact(retry=True):
        for key, value, ttl in items:
            cache.set(key, value, expire=ttl, retry=True)


def _incr(cache: diskcache.Cache, key: str) -> int:
    """Redis INCR on diskcache: ASCII digits as the value, any lifetime kept, one transaction."""
    with cache.transact(retry=True):
        value, expire_time = cache.get(key, expire_time=True)
        if value is None:
            current = 0
        elif _COUNTER.fullmatch(value):
            current = int(value)
        else:
            raise ValueError(f"cache value at {key!r} is not an integer")
        ttl = None if expire_time is None else max(expire_time - time.time(), 0.001)
        cache.set(key, str(current + 1).encode(), expire=ttl, retry=True)
        return current + 1


def _round_trip(cache: diskcache.Cache) -> None:
    key = f"-/check-writable/{uuid.uuid4().hex}"
    token = os.urandom(16)
    cache.set(key, token, expire=60, retry=True)
    try:
        if cache.get(key) != token:
            raise StorageError("disk cache read back a different value than it wrote")
    finally:
        cache.delete(key, retry=True)


def _prepare_directory(directory: Path) -> None:
    """Create the directory 0700, or refuse one that others could plant rows into."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = directory.stat()
    except OSError as exc:
        raise StorageError(f"cannot create cache directory {directory}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode):
        raise StorageError(f"cache directory {directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise StorageError(
            f"cache directory {directory} is owned by uid {info.st_uid}, not by this process "
            f"(uid {os.geteuid()}); refusing to use it"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StorageError(
            f"cache directory {directory} is group- or world-writable "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); refusing to use it (chmod 700 it)"
        )


def _restrict_db_files(directory: Path) -> None:
    """Make the SQLite files 0600; creating cache.db first makes SQLite copy that to -wal/-shm."""
    with contextlib.suppress(FileExistsError):
        os.close(os.open(directory / DBNAME, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    for name in _DB_FILES:
        path = directory / name
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mode & 0o077:
                path.chmod(0o600)


def _open_cache(directory: Path, size_limit: int) -> diskcache.Cache:
    """Open the cache; if SQLite calls the database corrupt, remove it and start empty."""
    try:
        return _connect(directory, size_limit)
    except (sqlite3.OperationalError, diskcache.Timeout, OSError) as exc:
        # Locked, unreadable, disk full: not corruption, so nothing is deleted.
        raise StorageError(f"cannot open disk cache in {directory}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        log.warning(
            "cache.corrupt",
            backend="disk",
            directory=str(directory),
            error=str(exc),
            action="removed the database and value files; starting empty",
        )
        _remove_cache_files(directory)
    try:
        return _connect(directory, size_limit)
    except (sqlite3.Error, diskcache.Timeout, OSError) as exc:
        raise StorageError(f"cannot open disk cache in {directory}: {exc}") from exc


def _connect(directory: Path, size_limit: int) -> diskcache.Cache:
    _restrict_db_files(directory)
    # Cache() only reads the Settings table, so check the whole file first (opening also replays
    # a WAL left by a killed process).
    with contextlib.closing(sqlite3.connect(directory / DBNAME)) as con:
        problems = [row for (row,) in con.execute("PRAGMA quick_check") if row != "ok"]
    if problems:
        raise sqlite3.DatabaseError("; ".join(problems[:3]))
    cache = diskcache.Cache(
        str(directory),
        timeout=_SQLITE_TIMEOUT,
        disk=BytesOnlyDisk,
        size_limit=size_limit,
        eviction_policy="least-recently-stored",
        # Per connection (diskcache re-applies sqlite_* settings to each): a WAL bounded by the
        # volume, and truncated back to that bound after each checkpoint.
        sqlite_wal_autocheckpoint=(pages := _wal_pages(directory)),
        sqlite_journal_size_limit=pages * _PAGE,
    )
    _restrict_db_files(directory)
    return cache


def _remove_cache_files(directory: Path) -> None:
    """Delete diskcache's own files only (the directory may be a mount point: keep it)."""
    for name in _DB_FILES:
        (directory / name).unlink(missing_ok=True)
    for child in directory.iterdir():
        if _VALUE_DIR.fullmatch(child.name) and child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)

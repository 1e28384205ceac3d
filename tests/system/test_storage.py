"""One `Storage` contract, run on every backend; then what only disk or only Redis must do.

Redis runs against a private redis-server (tests/redis_server.py); each test gets its own
namespace, so tests cannot see each other's keys.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import pickle
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import diskcache
import pytest
import redis.asyncio
from diskcache.core import MODE_PICKLE
from structlog.testing import capture_logs

from proxy.cache import Storage, StorageError, open_storage
from proxy.cache.disk import BytesOnlyDisk, DiskStorage, UnsafeRow
from proxy.cache.redis import RedisStorage
from tests.redis_server import free_port

SIZE_LIMIT = 64 * 2**20


@pytest.fixture(params=["disk", "redis"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Storage]:
    if request.param == "disk":
        store: Storage = DiskStorage(tmp_path / "cache", size_limit=SIZE_LIMIT)
        yield store
        await store.close()
        return
    url, namespace = request.getfixturevalue("redis_url"), f"test-{uuid.uuid4().hex}"
    store = RedisStorage(url, namespace=namespace)
    yield store
    await store.close()
    # Leave the session's server empty (the test may have closed `store` already).
    cleanup = RedisStorage(url, namespace=namespace)
    await cleanup.clear()
    await cleanup.close()


# --- contract: every backend ------------------------------------------------------------------


async def test_implements_the_protocol(storage: Storage) -> None:
    assert isinstance(storage, Storage)
    assert storage.name in ("disk", "redis")


@pytest.mark.parametrize(
    "value",
    [b"", b'{"a":1}', bytes(range(256)), os.urandom(100_000)],
    ids=["empty", "json", "all-bytes", "large"],  # large: diskcache keeps it in a file
)
async def test_get_returns_what_set_stored(storage: Storage, value: bytes) -> None:
    await storage.set("v1|project:42|deployments|2021-03-01", value, ttl=60)
    assert await storage.get("v1|project:42|deployments|2021-03-01") == value


async def test_get_of_a_missing_key_is_none(storage: Storage) -> None:
    assert await storage.get("v1|missing") is None


async def test_set_replaces_the_old_value(storage: Storage) -> None:
    await storage.set("k", b"old", ttl=60)
    await storage.set("k", b"new", ttl=None)
    assert await storage.get("k") == b"new"


async def test_expired_value_reads_as_missing(storage: Storage) -> None:
    await storage.set("short", b"x", ttl=0.2)
    await storage.set("forever", b"y", ttl=None)
    assert await storage.get("short") == b"x"
    await asyncio.sleep(0.35)
    assert await storage.get("short") is None
    assert await storage.get("forever") == b"y"


async def test_set_many_stores_every_entry_with_its_own_lifetime(storage: Storage) -> None:
    await storage.set("old", b"replaced", None)
    await storage.set_many(
        [("old", b"new", None), ("short", b"s", 0.2), ("long", b"l", 60)]
        + [(f"day-{n}", str(n).encode(), 60) for n in range(200)]
    )
    assert await storage.get("old") == b"new"
    assert await storage.get("day-199") == b"199"
    await asyncio.sleep(0.4)
    assert await storage.get("short") is None
    assert await storage.get("long") == b"l"
    await storage.set_many([])  # nothing to do is not an error


async def test_get_many_reads_each_key_in_order(storage: Storage) -> None:
    await storage.set_many([("a", b"1", 60), ("short", b"s", 0.2), ("c", b"3", None)])
    await storage.incr("counter")
    await asyncio.sleep(0.35)
    got = await storage.get_many(["c", "missing", "a", "short", "a", "counter"])
    assert got == [b"3", None, b"1", None, b"1", b"1"]
    assert await storage.get_many([]) == []


async def test_concurrent_sets_all_land(storage: Storage) -> None:
    """The disk storage commits concurrent sets together; none may be lost or misplaced."""
    await asyncio.gather(*(storage.set(f"k{n}", str(n).encode(), 60) for n in range(300)))
    values = [await storage.get(f"k{n}") for n in range(300)]
    assert values == [str(n).encode() for n in range(300)]
    await asyncio.gather(storage.set("same", b"1", 60), storage.set("same", b"2", 60))
    assert await storage.get("same") == b"2"  # arrival order is commit order


async def test_set_many_refuses_bad_entries_before_writing_any(storage: Storage) -> None:
    with pytest.raises(TypeError):
        await storage.set_many([("fine", b"1", None), ("bad", "text", None)])  # type: ignore[list-item]
    assert await storage.get("fine") is None


async def test_add_stores_only_when_absent(storage: Storage) -> None:
    assert await storage.add("lock", b"first", ttl=60) is True
    assert await storage.add("lock", b"second", ttl=60) is False
    assert await storage.get("lock") == b"first"


async def test_add_succeeds_again_once_the_key_expired(storage: Storage) -> None:
    assert await storage.add("lock", b"first", ttl=0.2) is True
    await asyncio.sleep(0.35)
    assert await storage.add("lock", b"second", ttl=60) is True
    assert await storage.get("lock") == b"second"


async def test_concurrent_adds_admit_exactly_one(storage: Storage) -> None:
    results = await asyncio.gather(*(storage.add("lock", b"%d" % i, ttl=10) for i in range(20)))
    assert results.count(True) == 1
    assert await storage.get("lock") == b"%d" % results.index(True)


async def test_incr_counts_from_one_and_reads_back_as_digits(storage: Storage) -> None:
    assert [await storage.incr("gen:42") for _ in range(3)] == [1, 2, 3]
    assert await storage.get("gen:42") == b"3"
    assert await storage.incr("gen:43") == 1  # counters are independent


async def test_concurrent_incrs_are_all_counted(storage: Storage) -> None:
    results = await asyncio.gather(*(storage.incr("gen") for _ in range(20)))
    assert sorted(results) == list(range(1, 21))


async def test_incr_of_a_non_integer_raises_value_error(storage: Storage) -> None:
    await storage.set("k", b"not a number", ttl=60)
    with pytest.raises(ValueError):
        await storage.incr("k")


async def test_delete_removes_and_ignores_missing_keys(storage: Storage) -> None:
    await storage.set("k", b"x", ttl=60)
    await storage.delete("k")
    await storage.delete("k")
    assert await storage.get("k") is None


async def test_clear_removes_everything(storage: Storage) -> None:
    for i in range(5):
        await storage.set(f"k{i}", b"x", ttl=60)
    await storage.incr("gen")
    assert await storage.clear() in (6, -1)
    assert [await storage.get(f"k{i}") for i in range(5)] == [None] * 5
    assert await storage.incr("gen") == 1
    assert await storage.clear() in (1, -1)


async def test_stats_counts_entries(storage: Storage) -> None:
    empty = await storage.stats()
    assert empty["backend"] == storage.name
    assert empty["entries"] == 0
    for i in range(3):
        await storage.set(f"k{i}", b"x" * 10, ttl=60)
    stats = await storage.stats()
    assert stats["entries"] == 3
    assert all(isinstance(v, int | str) for v in stats.values())


@pytest.mark.parametrize("key", [42, b"bytes-key", ("v1", "tuple"), None])
async def test_non_str_keys_are_refused(storage: Storage, key: object) -> None:
    with pytest.raises(TypeError):
        await storage.set(key, b"x", ttl=60)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await storage.get(key)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await storage.add(key, b"x", ttl=60)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await storage.incr(key)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await storage.delete(key)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["text", bytearray(b"x"), memoryview(b"x"), 1, {"a": 1}, None])
async def test_non_bytes_values_are_refused(storage: Storage, value: object) -> None:
    with pytest.raises(TypeError):
        await storage.set("k", value, ttl=60)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        await storage.add("k", value, ttl=60)  # type: ignore[arg-type]
    assert await storage.get("k") is None


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan")])
async def test_non_positive_or_infinite_ttls_are_refused(storage: Storage, ttl: float) -> None:
    with pytest.raises(ValueError):
        await storage.set("k", b"x", ttl=ttl)
    with pytest.raises(ValueError):
        await storage.add("k", b"x", ttl=ttl)


async def test_add_requires_a_ttl(storage: Storage) -> None:
    with pytest.raises(ValueError):
        await storage.add("lock", b"x", ttl=None)  # type: ignore[arg-type]


async def test_check_writable_passes_and_leaves_nothing_behind(storage: Storage) -> None:
    await storage.check_writable()
    assert (await storage.stats())["entries"] == 0


async def test_a_closed_storage_raises_storage_error(storage: Storage) -> None:
    await storage.close()
    await storage.close()  # idempotent
    with pytest.raises(StorageError):
        await storage.get("k")
    with pytest.raises(StorageError):
        await storage.check_writable()


# --- disk only --------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_disk_creates_a_private_directory_and_database(tmp_path: Path) -> None:
    directory = tmp_path / "a" / "cache"
    store = DiskStorage(directory, size_limit=SIZE_LIMIT)
    await store.set("k", b"x", ttl=60)
    assert _mode(directory) == 0o700
    db_files = sorted(directory.glob("cache.db*"))
    assert db_files, "no SQLite files"
    assert {p.name: _mode(p) for p in db_files} == {p.name: 0o600 for p in db_files}
    await store.close()


async def test_disk_tightens_existing_wide_database_files(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    await DiskStorage(directory, size_limit=SIZE_LIMIT).close()
    (directory / "cache.db").chmod(0o644)
    store = DiskStorage(directory, size_limit=SIZE_LIMIT)
    assert _mode(directory / "cache.db") == 0o600
    await store.close()


@pytest.mark.parametrize("mode", [0o777, 0o775, 0o757, 0o720])
def test_disk_refuses_a_directory_others_can_write(tmp_path: Path, mode: int) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    directory.chmod(mode)
    with pytest.raises(StorageError, match="group- or world-writable"):
        DiskStorage(directory, size_limit=SIZE_LIMIT)
    assert not (directory / "cache.db").exists()


def test_disk_accepts_an_existing_directory_only_it_can_write(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    directory.mkdir()
    directory.chmod(0o755)
    asyncio.run(DiskStorage(directory, size_limit=SIZE_LIMIT).close())


def test_disk_refuses_a_directory_owned_by_someone_else(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        directory = tmp_path / "cache"
        directory.mkdir(mode=0o700)
        os.chown(directory, 65534, 65534)
    else:
        directory = Path("/")  # root's, and not writable by us: nothing gets created
    with pytest.raises(StorageError, match="owned by uid"):
        DiskStorage(directory, size_limit=SIZE_LIMIT)
    assert not (directory / "cache.db").exists()


class _Payload:
    """Unpickling this writes `path`: if the file exists, someone unpickled it."""

    def __init__(self, path: Path, padding: str = "") -> None:
        self.path = path
        self.padding = padding

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return (Path.write_text, (self.path, "unpickled" + self.padding))


async def test_disk_never_unpickles_planted_rows(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    marker = tmp_path / "marker"
    store = DiskStorage(directory, size_limit=SIZE_LIMIT)
    await store.set("v1|ours", b"fine", ttl=None)

    # Someone with write access plants pickles through diskcache's default Disk.
    planter = diskcache.Cache(str(directory))
    planter.set("v1|small", _Payload(marker))  # pickle in the row
    planter.set("v1|large", _Payload(marker, "x" * 100_000))  # pickle in a value file
    planter.set("v1|counter", _Payload(marker))
    planter.set(_Payload(marker), b"value")  # pickled key
    planter.set(("v1|tuple",), b"value")  # pickled key, as memoize would write
    planter.close()
    assert (await store.stats())["entries"] == 6

    with capture_logs() as logs:
        assert await store.get("v1|small") is None
        assert await store.get("v1|large") is None
    assert [(e["event"], e["key"]) for e in logs] == [
        ("cache.undecodable", "v1|small"),
        ("cache.undecodable", "v1|large"),
    ]
    assert await store.get("v1|small") is None  # deleted, so not logged again
    with pytest.raises(ValueError):
        await store.incr("v1|counter")
    assert await store.add("v1|large", b"mine", ttl=60) is True
    assert await store.get("v1|large") == b"mine"
    assert await store.get("v1|ours") == b"fine"
    assert await store.clear() == 5  # pickled keys removed without being read
    await store.close()

    # The paths our storage never takes (iteration) are refused by the Disk itself.
    disk = BytesOnlyDisk(str(directory))
    payload = pickle.dumps(_Payload(marker))
    with pytest.raises(UnsafeRow):
        disk.get(payload, False)
    with pytest.raises(UnsafeRow):
        disk.fetch(MODE_PICKLE, None, payload, False)
    with pytest.raises(TypeError):
        disk.put(("v1|tuple",))
    with pytest.raises(TypeError):
        disk.store({"a": 1}, False)

    assert not marker.exists()
    # Control: the payload does run when unpickled, so the assertion above means something.
    pickle.loads(payload)
    assert marker.read_text() == "unpickled"


@pytest.mark.parametrize("damage", ["header", "pages"])
async def test_disk_starts_empty_after_corruption(tmp_path: Path, damage: str) -> None:
    directory = tmp_path / "cache"
    store = DiskStorage(directory, size_limit=SIZE_LIMIT)
    for i in range(300):
        await store.set(f"k{i}", os.urandom(2000), ttl=None)
    await store.set("big", os.urandom(100_000), ttl=None)
    await store.close()
    database = directory / "cache.db"
    with database.open("r+b") as file:
        if damage == "header":
            file.write(b"not a database!!" * 8)
        else:  # the header survives: only an integrity check notices
            file.seek(database.stat().st_size // 2)
            file.write(b"\xff" * 8192)

    with capture_logs() as logs:
        store = DiskStorage(directory, size_limit=SIZE_LIMIT)
    assert [e["event"] for e in logs] == ["cache.corrupt"]
    assert logs[0]["log_level"] == "warning"
    assert (await store.stats())["entries"] == 0
    assert not list(directory.glob("??/??/*.val")), "old value files left behind"
    await store.set("k1", b"fresh", ttl=None)
    assert await store.get("k1") == b"fresh"
    await store.close()


async def test_disk_keeps_values_across_reopen_and_folds_the_wal(tmp_path: Path) -> None:
    directory = tmp_path / "cache"
    store = DiskStorage(directory, size_limit=SIZE_LIMIT)
    await store.set("k", b"kept", ttl=None)
    await store.incr("gen")
    await store.close()
    assert not (directory / "cache.db-wal").exists(), "a connection was left open"
    store = DiskStorage(directory, size_limit=SIZE_LIMIT)
    assert await store.get("k") == b"kept"
    assert await store.incr("gen") == 2
    await store.close()


async def test_disk_evicts_oldest_entries_beyond_the_size_limit(tmp_path: Path) -> None:
    limit = 1_000_000
    store = DiskStorage(tmp_path / "cache", size_limit=limit)
    for i in range(60):  # 3 MB in total
        await store.set(f"k{i}", bytes(50_000), ttl=None)
    stats = await store.stats()
    assert int(stats["bytes"]) < limit * 1.5
    assert await store.get("k0") is None
    assert await store.get("k59") == bytes(50_000)
    await store.close()


async def test_disk_add_is_atomic_across_instances_and_threads(tmp_path: Path) -> None:
    # Two instances on one directory stand in for two worker processes on one host.
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        stores = [
            DiskStorage(tmp_path / "cache", size_limit=SIZE_LIMIT, executor=pool) for _ in range(2)
        ]
        results = await asyncio.gather(
            *(stores[i % 2].add("lock", b"x", ttl=10) for i in range(20))
        )
        counts = await asyncio.gather(*(stores[i % 2].incr("gen") for i in range(20)))
        for store in stores:
            await store.close()
    assert results.count(True) == 1
    assert sorted(counts) == list(range(1, 21))


# --- redis only -------------------------------------------------------------------------------


async def test_redis_prefixes_keys_and_sets_ttl_in_the_same_command(redis_url: str) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    store = RedisStorage(redis_url, namespace=namespace)
    other = RedisStorage(redis_url, namespace=f"{namespace}-other")
    raw = redis.asyncio.from_url(redis_url)
    try:
        await store.set("v1|k", b"x", ttl=30)
        await store.add("lock", b"x", ttl=30)
        await other.set("v1|k", b"other", ttl=30)
        assert await raw.get(f"{namespace}:v1|k") == b"x"
        assert 0 < await raw.pttl(f"{namespace}:v1|k") <= 30_000
        assert 0 < await raw.pttl(f"{namespace}:lock") <= 30_000
        assert await store.clear() == 2
        assert await other.get("v1|k") == b"other"  # a namespace sharing our prefix survives
    finally:
        await other.clear()
        await raw.aclose()
        await store.close()
        await other.close()


async def test_redis_reads_a_foreign_type_as_a_logged_miss(redis_url: str) -> None:
    namespace = f"test-{uuid.uuid4().hex}"
    store = RedisStorage(redis_url, namespace=namespace)
    raw = redis.asyncio.from_url(redis_url)
    try:
        await raw.rpush(f"{namespace}:k", b"a")
        with capture_logs() as logs:
            assert await store.get("k") is None
        assert [e["event"] for e in logs] == ["cache.undecodable"]
        assert await raw.exists(f"{namespace}:k") == 0
    finally:
        await raw.aclose()
        await store.close()


async def test_redis_errors_name_the_server_but_never_the_password() -> None:
    port = free_port()  # nothing listens there
    store = RedisStorage(f"redis://alice:s3cret-pw@127.0.0.1:{port}/0", timeout=1)
    with pytest.raises(StorageError) as caught:
        await store.check_writable()
    assert f"127.0.0.1:{port}" in str(caught.value)
    assert "s3cret-pw" not in str(caught.value)
    assert caught.value.__suppress_context__  # a logged traceback cannot show more
    await store.close()


@pytest.mark.parametrize(
    "url",
    ["redis://:s3cret-pw@host:notaport/0", "http://:s3cret-pw@host/0", "redis://:s3cret-pw@[::1"],
)
def test_redis_invalid_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(StorageError) as caught:
        RedisStorage(url)
    assert "s3cret-pw" not in str(caught.value)


# --- factory ----------------------------------------------------------------------------------


async def test_open_storage_picks_the_backend_from_the_location(tmp_path: Path) -> None:
    disk = open_storage(tmp_path / "cache", size_limit=SIZE_LIMIT)
    assert isinstance(disk, DiskStorage)
    await disk.close()
    remote = open_storage("redis://127.0.0.1:1/0", namespace="x")
    assert isinstance(remote, RedisStorage)
    await remote.close()

"""A 200 MB download through the pass-through, with the proxy as a real process: its resident
memory (VmRSS, sampled from /proc while the body flows) must grow by a small fraction of the
body, which only holds if the body is streamed chunk by chunk rather than read whole.

Same for an upload of 100 MB: the fake GitLab hashes it as it arrives (it keeps none of it).
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import aiohttp
import pytest

from proxy.demo.passthrough_routes import PATTERN
from proxy.demo.server import FakeGitLab
from tests.scenarios.s01_s05 import S1
from tests.system.test_process import start_proxy

DOWNLOAD = 200 * 1024 * 1024
UPLOAD = 100 * 1024 * 1024
MAX_GROWTH = 40 * 1024 * 1024  # a fifth of the download: buffers, not the body
RITA = {"PRIVATE-TOKEN": "tok-rita"}

pytestmark = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def sample_peak(pid: int, stop: asyncio.Event) -> int:
    peak = rss(pid)
    while not stop.is_set():
        peak = max(peak, rss(pid))
        await asyncio.sleep(0.02)
    return max(peak, rss(pid))


async def test_large_bodies_stream_through_with_bounded_memory(tmp_path: Path) -> None:
    fake = FakeGitLab(S1.world())
    fake.url = await fake.start()
    logs = tmp_path / "logs"
    logs.mkdir()
    proxy = await start_proxy(fake.url, tmp_path / "cache", logs, "passthrough")
    pid = proxy.process.pid
    try:
        async with aiohttp.ClientSession() as session:
            # warm up the path (imports, first connection) before the baseline
            url = f"{proxy.base_url}/api/v4/projects/11/packages/generic/generated/1/1000.bin"
            async with session.get(url, headers=RITA) as response:
                assert response.status == 200
                await response.read()
            baseline = rss(pid)

            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_peak(pid, stop))
            url = f"{proxy.base_url}/api/v4/projects/11/packages/generic/generated/1/{DOWNLOAD}.bin"
            digest, length = hashlib.sha256(), 0
            async with session.get(url, headers=RITA) as response:
                assert response.status == 200
                assert response.content_length == DOWNLOAD
                async for chunk in response.content.iter_chunked(1 << 20):
                    digest.update(chunk)
                    length += len(chunk)
            stop.set()
            download_peak = await sampler
            assert length == DOWNLOAD
            expected = hashlib.sha256()
            for _ in range(DOWNLOAD // len(PATTERN)):
                expected.update(PATTERN)
            assert digest.hexdigest() == expected.hexdigest()

            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_peak(pid, stop))
            sent = hashlib.sha256()

            async def body():
                block = bytes(range(256)) * 4096  # 1 MiB
                for _ in range(UPLOAD // len(block)):
                    sent.update(block)
                    yield block

            url = f"{proxy.base_url}/api/v4/projects/11/packages/generic/big/1/big.bin"
            async with session.put(url, data=body(), headers=RITA) as response:
                assert response.status == 201
            stop.set()
            upload_peak = await sampler
        received = fake.received[-1]  # type: ignore[attr-defined]
        assert (received.length, received.sha256) == (UPLOAD, sent.hexdigest())
        fake.packages.clear()  # type: ignore[attr-defined]
    finally:
        proxy.process.kill()
        await proxy.process.wait()
        await fake.close()
    assert download_peak - baseline < MAX_GROWTH, (baseline, download_peak)
    assert upload_peak - baseline < MAX_GROWTH, (baseline, upload_peak)

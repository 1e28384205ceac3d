"""Pass-through overhead: small GETs through the proxy vs straight to the fake GitLab, same run.

    .venv/bin/python -m bench.bench_passthrough [--rounds 3] [--duration 5] [--connections 16]
        [--latency 0.02]

The fake GitLab (`bench.fake_process`, its own process) and the proxy (`python -m proxy serve`,
its own process, pass_through=all) run side by side; wrk asks `GET /api/v4/projects/100` (the
project's JSON, ~0.7 kB, a call no DORA route takes) of each, alternating A/B per round:
- latency: one connection (`-c1`), so the p50 difference is the time the proxy adds per call;
- throughput: `--connections` connections, requests/s of the proxy over direct.
Targets (issue 13): at most 1 ms added at p50, at least 0.8x the direct requests/s. The CPU
each server process spends per request (user + system, from /proc) is printed too: it is the
figure least disturbed by other load on the machine. The machine
has 2 cores shared by wrk, the fake and the proxy: the proxy's process competes for CPU with the
very upstream it forwards to, which the direct runs do not pay.
"""

from __future__ import annotations

import argparse
import shutil
from datetime import date

from bench import worlds
from bench.bench_warm_path import measured, wrk
from bench.common import FakeProcess, ProxyProcess, http, markdown_table, median, print_machine

PATH = "/api/v4/projects/100"


def run(args: argparse.Namespace) -> None:
    with (
        FakeProcess("project", date.today().isoformat(), latency=args.latency) as fake,
        ProxyProcess(fake.url, {"pass_through": "all", "log_level": "warning"}) as proxy,
    ):
        direct_status, direct_body, _ = http(
            "GET", fake.url + PATH, {"PRIVATE-TOKEN": worlds.READER_TOKEN}
        )
        status, body, _ = proxy.get(PATH, worlds.READER_TOKEN)
        assert (status, body) == (direct_status, direct_body) == (200, body), (status, body[:200])
        print(f"GET {PATH}: {len(body)} bytes, identical through the proxy", flush=True)
        targets = {"proxy": (proxy.url + PATH, proxy.pid), "direct": (fake.url + PATH, fake.pid)}
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for round_ in range(args.rounds):
            for mode, connections in (("latency", 1), ("throughput", args.connections)):
                for name in ("proxy", "direct"):
                    url, pid = targets[name]
                    result = measured(
                        pid,
                        lambda url=url, c=connections: wrk(
                            url, threads=1, connections=c, duration=args.duration
                        ),
                    )
                    results.setdefault((mode, name), []).append(result)
                    print(
                        f"  round {round_ + 1} {mode} -c{connections} {name}: "
                        f"{result['rps']:.0f} req/s, p50 {result['p50']:.3f} ms, "
                        f"p99 {result['p99']:.3f} ms, server CPU "
                        f"{result['user_us']:.0f} + {result['sys_us']:.0f} µs/request",
                        flush=True,
                    )
    rows = []
    for mode in ("latency", "throughput"):
        for name in ("proxy", "direct"):
            runs = results[(mode, name)]
            rows.append(
                [
                    mode,
                    name,
                    ", ".join(f"{r['rps']:.0f}" for r in runs),
                    f"{median([r['rps'] for r in runs]):.0f}",
                    f"{median([r['p50'] for r in runs]):.3f}",
                    f"{median([r['p99'] for r in runs]):.3f}",
                    f"{median([r['user_us'] for r in runs]):.0f}",
                    f"{median([r['sys_us'] for r in runs]):.0f}",
                ]
            )
    print(
        f"\nwrk -t1 -d{args.duration}s, {args.rounds} rounds, upstream latency {args.latency} s, "
        "proxy and direct alternating; "
        f"latency at -c1, throughput at -c{args.connections}:"
    )
    print(
        markdown_table(
            [
                "mode",
                "target",
                "req/s per run",
                "req/s median",
                "p50 ms",
                "p99 ms",
                "server CPU µs/request user",
                "system",
            ],
            rows,
        )
    )
    added = [
        p["p50"] - d["p50"]
        for p, d in zip(results[("latency", "proxy")], results[("latency", "direct")], strict=True)
    ]
    ratios = [
        p["rps"] / d["rps"]
        for p, d in zip(
            results[("throughput", "proxy")], results[("throughput", "direct")], strict=True
        )
    ]
    print(
        f"p50 added by the proxy at -c1: median {median(added):.3f} ms (per round: "
        + ", ".join(f"{a:.3f}" for a in added)
        + f"); target <= 1 ms: {'met' if median(added) <= 1 else 'NOT met'}"
    )
    print(
        f"proxy / direct req/s at -c{args.connections}: median {median(ratios):.2f} (per round: "
        + ", ".join(f"{r:.2f}" for r in ratios)
        + f"); target >= 0.8: {'met' if median(ratios) >= 0.8 else 'NOT met'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--latency",
        type=float,
        default=0.0,
        help="seconds the fake GitLab waits per call (GitLab's own time; 0: an instant upstream)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    print_machine()
    run(args)


if __name__ == "__main__":
    main()

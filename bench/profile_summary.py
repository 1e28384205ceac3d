"""Summarise py-spy raw stacks (`BENCH_PYSPY=FILE`): samples per thread, by leaf, inclusive.

    .venv/bin/python -m bench.profile_summary /tmp/prof.1234 [--leaves 40] [--inclusive 80]

At py-spy's `--rate 250` a sample is 4 ms of one thread; with `--gil` only the thread holding
the GIL is sampled, so the total is the time Python code ran at all.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--leaves", type=int, default=40)
    parser.add_argument("--inclusive", type=int, default=80)
    args = parser.parse_args()
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for name in args.files:
        with open(name) as lines:
            for line in lines:
                stack, _, count = line.rstrip().rpartition(" ")
                if not stack:
                    continue
                samples = int(count)
                thread, *frames = stack.split(";")
                total += samples
                threads[re.sub(r" \(\d+\)", "", thread)] += samples
                if frames:
                    leaf[frames[-1]] += samples
                for frame in {re.sub(r":\d+\)", ")", f) for f in frames}:
                    inclusive[frame] += samples
    print(f"samples: {total}")
    print("by thread:", ", ".join(f"{t} {n}" for t, n in threads.most_common(16)))
    print("--- leaf")
    for frame, n in leaf.most_common(args.leaves):
        print(f"{n:6d} {frame}")
    print("--- inclusive")
    for frame, n in inclusive.most_common(args.inclusive):
        print(f"{n:6d} {frame}")


if __name__ == "__main__":
    main()

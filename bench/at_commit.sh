#!/usr/bin/env bash
# Run a benchmark against a committed snapshot of the proxy, not the shared work tree (which may
# hold other people's half-done edits). The benchmarks themselves are taken from the work tree.
#
#   bench/at_commit.sh [COMMIT] -- bench.bench_group --concurrency 8
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
commit=HEAD
if [[ $# -gt 0 && $1 != -- ]]; then commit=$1; shift; fi
[[ ${1:-} == -- ]] && shift
dir=$(mktemp -d /tmp/dora-bench-tree.XXXXXX)
trap 'rm -rf "$dir"' EXIT
git -C "$root" archive "$commit" | tar -x -C "$dir"
mkdir -p "$dir/bench"
cp "$root"/bench/*.py "$dir/bench/"
cd "$dir"
BENCH_COMMIT=$(git -C "$root" rev-parse --short "$commit") "$root/.venv/bin/python" -m "$@"

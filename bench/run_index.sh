#!/usr/bin/env bash
# The search index's types (exact, exact-int8, ivf, hnsw) side by side:
# build time, single-query latency p50/p95 and recall@10 against exact f32
# search, on synthetic clustered unit vectors of 128 values (the embedding
# size of configs/bench-small.json); see docs/search.md.
#
# Usage: bench/run_index.sh [BUILD_DIR]   (default: $TM_BUILD or build)
# Environment: INDEX_QUICK=1 (10^4 and 3x10^4 items, 50 queries: a
#   CI-sized run of a few minutes); INDEX_1M=0 leaves out the 10^6 case
#   (about 0.6 GB of vectors; exact-int8 and ivf, 100 queries);
#   INDEX_HNSW_1M=1 adds hnsw at 10^6 (its build takes many CPU-minutes:
#   about 40 minutes on 2 loaded cores with M 16 and efConstruction 40),
#   built with M = INDEX_HNSW_1M_M (16) and efConstruction =
#   INDEX_HNSW_1M_EFC (40; 200 builds about 5x slower) and searched at
#   ef_search 16, 64 and 256 (INDEX_HNSW_1M_EF) on the one build.
#   INDEX_HNSW_EFC=1 adds the efConstruction comparison of docs/search.md:
#   hnsw at 10^4 and 10^5 built with efConstruction 40 and 200, each
#   searched at ef_search 16, 64, 256 twice (interleaved).
# stdout: one JSON object per size and type ({"bench":"index", ...}).
set -uo pipefail
BUILD=${1:-${TM_BUILD:-build}}
BENCH="$BUILD/bench/bench_index"
if [ ! -x "$BENCH" ]; then
  echo "run_index: $BENCH is not built (cmake --build $BUILD)" >&2
  exit 1
fi
if [ "${INDEX_QUICK:-0}" = 1 ]; then
  exec "$BENCH" --quick
fi
rc=0
"$BENCH" --sizes 10000,100000 --queries 200 || rc=1
if [ "${INDEX_HNSW_EFC:-0}" = 1 ]; then
  "$BENCH" --sizes 10000,100000 --types hnsw --queries 200 --ef-construction 40,200 \
    --ef-search 16,64,256,16,64,256 || rc=1
fi
if [ "${INDEX_1M:-1}" = 1 ]; then
  types=exact-int8,ivf
  if [ "${INDEX_HNSW_1M:-0}" = 1 ]; then types=$types,hnsw; fi
  "$BENCH" --sizes 1000000 --types "$types" --queries 100 --hnsw-m "${INDEX_HNSW_1M_M:-16}" \
    --ef-construction "${INDEX_HNSW_1M_EFC:-40}" --ef-search "${INDEX_HNSW_1M_EF:-16,64,256}" || rc=1
fi
exit $rc

#!/usr/bin/env bash
# Installs the Debian packages that trimodal's build, tests and tools need,
# skipping those already present. Runs apt-get only when something is missing.
set -euo pipefail
pkgs=(build-essential cmake pkg-config libopenblas-dev libcjson-dev clang libclang-rt-14-dev
      libstb-dev libsndfile1-dev libsamplerate0-dev libfftw3-dev libpcre2-dev
      libmicrohttpd-dev libsodium-dev
      # approximate search indexes (ivf, hnsw: docs/search.md); the build
      # works without it, but then those index types are off
      libfaiss-dev
      # the FashionTri dataset builder (docs/datasets.md) and its test: images,
      # WordNet (scripts/fashiontri_terms.sh), the text-to-speech engines and voices
      dataset-fashion-mnist wordnet espeak-ng flite festival
      festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
      # data-parallel training (trimodal train under mpirun, docs/training.md)
      libopenmpi-dev openmpi-bin
      # tests: JSON checks in the shell tests, and the evaluation report rendered
      # in a headless browser (tests/eval/test_report_chromium.sh)
      python3 chromium)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "deps: installing ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# `make demo`: until the tri-modal demo exists (the data and training
# issues), it trains the small MLP example on the public API and prints the
# machine's kernel setup.
set -euo pipefail
BUILD=${1:-build}
"$BUILD/bin/trimodal" info
echo
"$BUILD/bin/example_mlp"

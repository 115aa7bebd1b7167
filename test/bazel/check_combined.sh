#!/bin/bash
# The fan-in saw every part: multiples of 1..12 of 1..200, deduplicated, max 2400.
set -euo pipefail
[[ "$(tail -n 1 "$1")" == 2400 ]]
[[ "$(head -n 1 "$1")" == 1 ]]

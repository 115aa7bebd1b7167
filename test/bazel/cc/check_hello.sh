#!/bin/bash
# Runs the cc_binary and checks its output (djb2 of "remote" is 422343729).
set -euo pipefail
out="$("$1" remote)"
if [[ "$out" != "hello remote 422343729" ]]; then
  echo "unexpected output: $out" >&2
  exit 1
fi
echo "ok: $out"

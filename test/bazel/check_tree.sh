#!/bin/bash
# The tree artifact carried all seven files, the empty one included.
set -euo pipefail
[[ "$(wc -l < "$1")" == 7 ]]
grep -q ' ./c/empty$' "$1"

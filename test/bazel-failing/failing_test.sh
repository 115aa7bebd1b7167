#!/bin/bash
# Fails on purpose; the e2e test looks for this text in Bazel's output.
echo "kiln-failing-test: this test fails on purpose"
echo "kiln-failing-test: stderr line" >&2
exit 1

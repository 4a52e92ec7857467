#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# smoke.sh BINARY [ARGS...] — runs a benchmark briefly and checks that it
# printed one valid JSON object on stdout in which some work was acked.
# It checks that the harness works, never how fast: no test asserts on time.
set -eu
bin=$1
shift
out=$(mktemp "${TMPDIR:-/tmp}/bench-smoke.XXXXXX")
trap 'rm -f "$out"' EXIT
"$bin" "$@" >"$out"
python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["events_acked"] > 0, d' <"$out"
echo "smoke: ok ($(python3 -c 'import json,sys; print(json.load(sys.stdin)["events_acked"])' <"$out") events acked)"

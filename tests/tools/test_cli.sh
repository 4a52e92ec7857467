#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# test_cli.sh — drives the hodei-audit CLI as an operator would: help and
# usage errors, `verify` on a data directory written by the real engine
# (make_data), `inspect` on each kind of file in both output modes, then a
# flipped byte in a segment that `verify` and `inspect` must report.
#
#   test_cli.sh HODEI_AUDIT MAKE_DATA
#
# Exit 0 on success, 1 on the first failed check, 77 (skipped) without
# python3, which checks the JSON.
set -u

AUDIT=$1
MAKE_DATA=$2
command -v python3 >/dev/null 2>&1 || { echo "skip: python3 not found"; exit 77; }

TMP=$(mktemp -d "${HODEI_TEST_TMP:-/tmp}/cli-XXXXXX") || exit 1
OUT=$TMP/out
FAILED=0

fail() {
	echo "FAIL: $*"
	echo "--- last output:"
	cat "$OUT" 2>/dev/null
	FAILED=1
}

# expect CODE CMD...: runs CMD with stdout+stderr in $OUT, checks its exit code.
expect() {
	want=$1
	shift
	"$@" >"$OUT" 2>&1
	got=$?
	[ "$got" -eq "$want" ] || fail "'$*' exited $got, expected $want"
}

# expect_json CODE CMD...: same, and stdout must be one JSON document.
expect_json() {
	want=$1
	shift
	"$@" >"$OUT" 2>"$OUT.err"
	got=$?
	[ "$got" -eq "$want" ] || fail "'$*' exited $got, expected $want"
	python3 -m json.tool "$OUT" >/dev/null || fail "'$*' did not print valid JSON"
}

# Each line of $OUT must be a JSON object (NDJSON), the last a summary.
check_ndjson() {
	python3 -c '
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
assert lines and lines[-1]["type"] == "summary", "no summary object last"
' "$OUT" || fail "verify --json did not print NDJSON ending in a summary"
}

# --- usage ------------------------------------------------------------------
expect 0 "$AUDIT" --help
grep -q "usage: hodei-audit" "$OUT" || fail "--help prints no usage"
expect 0 "$AUDIT" help
expect 2 "$AUDIT"
expect 2 "$AUDIT" no-such-command
grep -q "unknown command" "$OUT" || fail "unknown command not named"
expect 2 "$AUDIT" verify
expect 2 "$AUDIT" verify --data-dir
expect 2 "$AUDIT" verify --data-dir "$TMP" --bogus
expect 2 "$AUDIT" inspect
expect 3 "$AUDIT" verify --data-dir /nonexistent/hodei-data
grep -q "/nonexistent/hodei-data" "$OUT" || fail "unreadable directory not named"
expect 3 "$AUDIT" inspect "$TMP/no-such-file"
grep -q "no-such-file" "$OUT" || fail "unreadable file not named"

# --- an intact data directory ----------------------------------------------
DATA=$TMP/data
expect 0 "$MAKE_DATA" "$DATA"
expect 0 "$AUDIT" verify --data-dir "$DATA"
grep -q "verify: intact" "$OUT" || fail "verify printed no intact summary"
expect 0 "$AUDIT" verify --data-dir "$DATA" --json
check_ndjson

SEG=$(ls "$DATA"/shard-*/segments/*.hseg | head -n 1)
WAL=$(ls "$DATA"/shard-*/wal/wal-*.log | head -n 1)
MAN=$(ls "$DATA"/shard-*/manifest.log | head -n 1)
[ -f "$SEG" ] && [ -f "$WAL" ] && [ -f "$MAN" ] || fail "make_data wrote no segment, WAL or manifest"

expect 0 "$AUDIT" inspect "$SEG"
grep -q "^verify: ok" "$OUT" || fail "inspect segment: no 'verify: ok'"
grep -q "^block 0:" "$OUT" || fail "inspect segment: no block listing"
expect_json 0 "$AUDIT" inspect "$SEG" --json
expect 0 "$AUDIT" inspect "$WAL"
grep -q "^end: *clean" "$OUT" || fail "inspect WAL: no clean end"
expect_json 0 "$AUDIT" inspect --json "$WAL"
expect 0 "$AUDIT" inspect "$MAN"
grep -q "segment " "$OUT" || fail "inspect manifest: no segment record"
expect_json 0 "$AUDIT" inspect "$MAN" --json

# --- one flipped byte in a segment -----------------------------------------
python3 -c '
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[100] ^= 0xFF
open(p, "wb").write(b)
' "$SEG" || fail "could not corrupt $SEG"
expect 1 "$AUDIT" verify --data-dir "$DATA"
grep -q "$(basename "$SEG")" "$OUT" || fail "verify did not name the corrupt segment"
expect 1 "$AUDIT" verify --data-dir "$DATA" --json
check_ndjson
expect 1 "$AUDIT" inspect "$SEG"
grep -q "^verify: FAILED" "$OUT" || fail "inspect of a corrupt segment did not fail"

if [ "$FAILED" -eq 0 ]; then
	rm -rf "$TMP"
	echo "ok"
fi
exit "$FAILED"

#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# fuzz.sh — a short libFuzzer run of every fuzz target, as CI does it:
# builds build-fuzz/ with clang, HODEI_FUZZ=ON and ASan+UBSan, then runs
# each target tests/fuzz/fuzz_NAME.c (binary build-fuzz/tests/fuzz_NAME)
# for SECONDS over its checked-in corpus tests/fuzz/corpus/NAME.
#
#   scripts/fuzz.sh [SECONDS]     (default 60)
#
# New inputs go to build-fuzz/fuzz-corpus/NAME, never into the checked-in
# corpus; a crashing input is saved in build-fuzz/fuzz-artifacts/ — add it
# to tests/fuzz/corpus/NAME with the fix, so CTest replays it from then on.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

seconds=${1:-60}
case "$seconds" in
'' | *[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2 ;;
esac
dir=build-fuzz

# The library under test must carry coverage instrumentation too, not only
# the fuzz target's own file: otherwise libFuzzer fuzzes blind.
BUILD_DIR=$dir CC=clang CMAKE_BUILD_TYPE=RelWithDebInfo \
HODEI_CMAKE_ARGS="-DHODEI_FUZZ=ON -DHODEI_SANITIZE=address -DCMAKE_C_FLAGS=-fsanitize=fuzzer-no-link" \
	scripts/setup.sh --no-run || exit 1

shopt -s nullglob
sources=(tests/fuzz/fuzz_*.c)
if [ ${#sources[@]} -eq 0 ]; then
	echo "==> fuzz: no fuzz targets (tests/fuzz/fuzz_*.c): nothing to run"
	exit 0
fi

export ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
mkdir -p "$dir/fuzz-artifacts"
ok=0
bad=()
for src in "${sources[@]}"; do
	name=$(basename "$src" .c)
	name=${name#fuzz_}
	bin=$dir/tests/fuzz_$name
	corpus=tests/fuzz/corpus/$name
	if [ ! -x "$bin" ]; then
		echo "==> fuzz_$name: $bin was not built (is it in tests/fuzz/tests.cmake?)"
		bad+=("fuzz_$name")
		continue
	fi
	corpora=("$dir/fuzz-corpus/$name")
	mkdir -p "${corpora[0]}"
	if [ -d "$corpus" ]; then
		corpora+=("$corpus")
		echo "==> fuzz_$name: ${seconds} s over $corpus"
	else
		echo "==> fuzz_$name: ${seconds} s, no checked-in corpus ($corpus)"
	fi
	if "$bin" -max_total_time="$seconds" -print_final_stats=1 \
		-artifact_prefix="$dir/fuzz-artifacts/fuzz_${name}-" "${corpora[@]}"; then
		ok=$((ok + 1))
	else
		bad+=("fuzz_$name")
	fi
done

echo
if [ ${#bad[@]} -gt 0 ]; then
	echo "fuzz.sh: FAILED: ${bad[*]} (inputs in $dir/fuzz-artifacts/)"
fi
echo "fuzz.sh: ${ok} passed, ${#bad[@]} failed"
[ ${#bad[@]} -eq 0 ]

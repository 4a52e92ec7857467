#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# test.sh — the whole test suite: installs what is missing and builds
# (scripts/setup.sh --no-run), runs every CTest label in build/, then builds
# with ASan+UBSan in build-asan/ and runs the unit and fuzz-corpus tests
# there, then the same tests of a -O3 build. Exits non-zero if anything
# failed.
#
#   scripts/test.sh [all|main|asan|tsan|release]
#
#   all    main, then asan, then tsan, then release (the default)
#   main   every CTest label in ${BUILD_DIR:-build}/ (honours CC, CMAKE_BUILD_TYPE)
#   asan   ASan+UBSan, Debug, -Werror, clang if present: labels unit|fuzz-regress,
#          and the integration suite against the sanitized server
#   tsan   TSan, Debug, clang if present, in build-tsan/: label tsan
#   release  Release (-O3 -DNDEBUG), in build-release/: labels unit|fuzz-regress.
#          Code that reads memory it never set can pass at -O2 and fail at
#          -O3: an uninitialised XXH3 state gave WAL records checksums their
#          payloads did not match only at -O3 (docs/PERFORMANCE.md, fifteenth
#          round), and the engine's tests failed there
#
# HODEI_TEST_QUICK=1 makes "all" skip the sanitizer and release passes
# (local iteration).
#
# Criterion runs each test in a forked child, and a sanitizer report printed
# by a child whose test passed does not fail the test. So every sanitizer
# pass also reads the full output of every test (ctest keeps it in
# Testing/Temporary/LastTest.log) and counts a test with a report as failed.
#
# Criterion 2.4.1 cannot start under TSan ("Could not initialize inheritable
# arena", Criterion issue #274): its arena is mapped at a random fixed
# address that TSan refuses. So the TSan pass runs the tests labelled "tsan",
# which are plain programs with their own main(), not the unit label.
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1

say() { printf '==> %s\n' "$*"; }

mode=${1:-all}
case "$mode" in
all | main | asan | tsan | release) ;;
-h | --help) sed -n '4,24s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; exit 0 ;;
*) echo "test.sh: unknown mode '$mode' (all, main, asan, tsan or release)" >&2; exit 2 ;;
esac
if [ "$mode" = all ] && [ "${HODEI_TEST_QUICK:-0}" = 1 ]; then
	say "HODEI_TEST_QUICK=1: skipping the sanitizer and release passes"
	mode=main
fi

passed=0
failed=0
stages=()  # one line per stage for the summary
problems=0 # stages that failed

ctest_wrap=() # a command ctest runs under (setarch, for TSan)
sanitizer_cc=gcc
command -v clang >/dev/null 2>&1 && sanitizer_cc=clang

# stage_end NAME STATUS DETAIL: record a stage's outcome for the summary.
stage_end() {
	local name=$1 status=$2 detail=$3
	if [ "$status" -eq 0 ]; then
		stages+=("$(printf '  %-7s ok      %s' "$name" "$detail")")
	else
		stages+=("$(printf '  %-7s FAILED  %s' "$name" "$detail")")
		problems=$((problems + 1))
	fi
}

# build NAME BUILD_DIR [VAR=VALUE...]: scripts/setup.sh --no-run with the
# given environment. Returns its status.
build() {
	local name=$1 dir=$2 start=$SECONDS rc
	shift 2
	say "$name: build in $dir/"
	env BUILD_DIR="$dir" "$@" scripts/setup.sh --no-run
	rc=$?
	[ "$rc" -eq 0 ] || stage_end "$name" 1 "build in $dir/ failed ($((SECONDS - start)) s)"
	return "$rc"
}

# sanitized_passes LOG PATTERN: names of the tests in LOG (a LastTest.log)
# that passed although their output matches PATTERN.
sanitized_passes() {
	awk -v re="$2" '
		/^[0-9]+\/[0-9]+ Testing: / { name = $3; hit = 0 }
		$0 ~ re                     { hit = 1 }
		/^Test Passed\./            { if (hit) print name }
	' "$1" | sort -u
}

# run_tests NAME BUILD_DIR SANITIZER_PATTERN [ctest args...]: runs ctest
# (output shown and kept in BUILD_DIR/ctest.log), adds to the counts, and
# fails tests whose output has a sanitizer report (PATTERN; empty: none).
run_tests() {
	local name=$1 dir=$2 pattern=$3 start=$SECONDS rc n_fail n_total
	shift 3
	local log="$dir/ctest.log" full="$dir/Testing/Temporary/LastTest.log"
	say "$name: ctest in $dir/${*:+ $*}"
	rm -f "$full"
	# The tests' data directories (HODEI_TEST_TMP): the last run's only,
	# kept for a look after a failure, never piling up over runs.
	rm -rf "$dir/test-tmp" && mkdir -p "$dir/test-tmp"
	"${ctest_wrap[@]}" ctest --test-dir "$dir" --output-on-failure --no-tests=error -j2 "$@" 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}

	local summary
	summary=$(grep -E '[0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)
	if [ -z "$summary" ]; then
		stage_end "$name" 1 "ctest in $dir/ ran no test (exit $rc, log: $log)"
		return 1
	fi
	n_fail=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$summary")
	n_total=$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/' <<<"$summary")

	local dirty=()
	if [ -n "$pattern" ] && [ -f "$full" ]; then
		mapfile -t dirty < <(sanitized_passes "$full" "$pattern")
		if [ ${#dirty[@]} -gt 0 ]; then
			say "$name: sanitizer reports in tests that ctest counted as passed:"
			grep -E -B2 -A25 "$pattern" "$full" | head -n 200
			printf '    %s\n' "${dirty[@]}"
			n_fail=$((n_fail + ${#dirty[@]}))
			rc=1
		fi
	elif [ -n "$pattern" ]; then
		say "$name: $full is missing: cannot check for sanitizer reports"
		rc=1
	fi

	passed=$((passed + n_total - n_fail))
	failed=$((failed + n_fail))
	local detail="$dir/: $((n_total - n_fail))/$n_total tests passed"
	[ ${#dirty[@]} -gt 0 ] && detail+=", sanitizer report in: ${dirty[*]}"
	stage_end "$name" "$rc" "$detail ($((SECONDS - start)) s)"
	return "$rc"
}

asan_pattern='ERROR: (LeakSanitizer|AddressSanitizer)|runtime error:|LeakSanitizer has encountered a fatal error'
tsan_pattern='WARNING: ThreadSanitizer|ERROR: ThreadSanitizer|FATAL: ThreadSanitizer'

stage_main() {
	build main "${BUILD_DIR:-build}" || return
	run_tests main "${BUILD_DIR:-build}" ""
}

stage_asan() {
	build asan build-asan CC="$sanitizer_cc" CMAKE_BUILD_TYPE=Debug \
		HODEI_CMAKE_ARGS="-DHODEI_SANITIZE=address -DHODEI_WERROR=ON" || return
	ASAN_OPTIONS="detect_leaks=1:abort_on_error=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
	UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
		run_tests asan build-asan "$asan_pattern" -L 'unit|fuzz-regress|integration'
}

stage_tsan() {
	local n bits
	build tsan build-tsan CC="$sanitizer_cc" CMAKE_BUILD_TYPE=Debug \
		HODEI_CMAKE_ARGS="-DHODEI_SANITIZE=thread" || return
	n=$(ctest --test-dir build-tsan -N -L '^tsan$' | sed -n 's/^Total Tests: //p')
	if [ "${n:-0}" -eq 0 ]; then
		say "tsan: no test is labelled tsan yet (Criterion tests cannot run under TSan)"
		stages+=("$(printf '  %-7s SKIPPED no test labelled tsan in build-tsan/' tsan)")
		return 0
	fi
	# TSan of clang 14 / gcc 12 aborts at start ("unexpected memory
	# mapping") on kernels with more than 28 bits of mmap randomness, as on
	# current CI runners: run it without address randomization there.
	bits=$(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 0)
	if [ "$bits" -gt 28 ]; then
		if setarch "$(uname -m)" -R true 2>/dev/null; then
			ctest_wrap=(setarch "$(uname -m)" -R)
			say "tsan: vm.mmap_rnd_bits=$bits: running under setarch -R"
		else
			say "tsan: vm.mmap_rnd_bits=$bits and setarch -R is refused: TSan may not start"
		fi
	fi
	TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1${TSAN_OPTIONS:+:$TSAN_OPTIONS}" \
		run_tests tsan build-tsan "$tsan_pattern" -L '^tsan$'
	local rc=$?
	ctest_wrap=()
	return "$rc"
}

stage_release() {
	build release build-release CMAKE_BUILD_TYPE=Release || return
	run_tests release build-release "" -L 'unit|fuzz-regress'
}

case "$mode" in
all) stage_main; stage_asan; stage_tsan; stage_release ;;
main) stage_main ;;
asan) stage_asan ;;
tsan) stage_tsan ;;
release) stage_release ;;
esac

echo
echo "== test.sh summary ($mode, $((SECONDS / 60)) min $((SECONDS % 60)) s) =="
printf '%s\n' "${stages[@]}"
if [ "$problems" -gt 0 ]; then
	echo "test.sh: FAILED ($problems of ${#stages[@]} stages)"
fi
echo "test.sh: $passed passed, $failed failed"
[ "$problems" -eq 0 ]

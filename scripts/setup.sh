#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# setup.sh — the first command on a fresh Debian 12 machine: installs the
# Debian packages hodei-audit needs (only the missing ones, so a second run
# does no apt work at all), makes the Python virtual environment .venv/ of
# the integration tests (tests/integration/requirements.txt; skipped when it
# is already up to date), configures and builds the project with CMake and
# Ninja, then runs hodei-auditd on its embedded defaults.
#
#   scripts/setup.sh [--no-run] [--] [hodei-auditd arguments...]
#
# Environment (all optional):
#   CC                 C compiler (default: CMake's choice, normally cc = gcc)
#   CMAKE_BUILD_TYPE   Debug, Release, RelWithDebInfo (default), MinSizeRel
#   BUILD_DIR          build directory, relative to the repository (default build)
#   HODEI_CMAKE_ARGS   extra CMake arguments, split on spaces
#                      (e.g. "-DHODEI_SANITIZE=address -DHODEI_WERROR=ON")
set -euo pipefail

usage() {
	sed -n '4,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

say() { printf '==> %s\n' "$*"; }
die() {
	printf 'setup.sh: error: %s\n' "$*" >&2
	exit 1
}

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

run=1
while [ $# -gt 0 ]; do
	case "$1" in
	--no-run) run=0; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	*) break ;; # the rest belongs to hodei-auditd
	esac
done

build_dir=${BUILD_DIR:-build}
build_type=${CMAKE_BUILD_TYPE:-RelWithDebInfo}

# What the project builds with, plus what the next issues need (protobuf-c,
# nghttp2, libcurl, libmicrohttpd) so that one setup serves them too.
packages=(
	build-essential cmake ninja-build pkg-config git
	liburing-dev libzstd-dev libxxhash-dev libssl-dev libcriterion-dev
	libjansson-dev libyajl-dev clang libclang-rt-14-dev python3 python3-venv
	libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev libnghttp2-dev
	libcurl4-openssl-dev libmicrohttpd-dev prometheus openssl
	clickhouse-server clickhouse-client zlib1g-dev
)

install_missing() {
	local missing=() p status
	for p in "${packages[@]}"; do
		status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
		[ "$status" = "ii " ] || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		say "packages: all ${#packages[@]} present"
		return
	fi
	say "packages: installing ${#missing[@]} missing: ${missing[*]}"
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 ||
			die "not root and no sudo: install these as root: ${missing[*]}"
		sudo=(sudo)
	fi
	local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get
		-o DPkg::Lock::Timeout=300 -q)
	"${apt[@]}" update
	"${apt[@]}" install -y --no-install-recommends "${missing[@]}"
}

# The integration tests' Python packages (grpcio, grpcio-tools, pytest...)
# in .venv/, from PyPI. A stamp holding the requirements file's hash makes a
# second run do nothing, and a changed requirements file reinstall.
setup_venv() {
	local venv=.venv req=tests/integration/requirements.txt
	local stamp="$venv/.hodei-requirements.sha256" want
	[ -f "$req" ] || return 0
	want=$(sha256sum "$req" | cut -d' ' -f1)
	if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
		say "venv: $venv/ up to date"
		return
	fi
	say "venv: installing $req into $venv/"
	if [ ! -x "$venv/bin/python" ]; then
		python3 -m venv "$venv" || die "python3 -m venv $venv failed (is python3-venv installed?)"
	fi
	"$venv/bin/python" -m pip install -q -r "$req" ||
		die "pip install -r $req failed (PyPI unreachable?)"
	printf '%s\n' "$want" >"$stamp"
}

command -v dpkg-query >/dev/null 2>&1 ||
	die "this script installs Debian packages: run it on Debian 12 (bookworm)"
install_missing
setup_venv

cmake_args=(-S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE="$build_type")
if [ -n "${CC:-}" ]; then
	cc_path=$(command -v "$CC") || die "CC=$CC: no such compiler"
	cmake_args+=(-DCMAKE_C_COMPILER="$cc_path")
fi
if [ -n "${HODEI_CMAKE_ARGS:-}" ]; then
	read -r -a extra <<<"$HODEI_CMAKE_ARGS"
	cmake_args+=("${extra[@]}")
fi

# A build directory made by another generator cannot be reused by Ninja.
if [ -f "$build_dir/CMakeCache.txt" ] &&
	! grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja$' "$build_dir/CMakeCache.txt"; then
	die "$build_dir/ was configured with another CMake generator: remove it first"
fi

say "configure: $build_dir/ ($build_type${CC:+, CC=$CC}${HODEI_CMAKE_ARGS:+, $HODEI_CMAKE_ARGS})"
mkdir -p "$build_dir"
cmake "${cmake_args[@]}" >"$build_dir/configure.log" 2>&1 || {
	cat "$build_dir/configure.log" >&2
	die "cmake configure failed (output above, also in $build_dir/configure.log)"
}

say "build: ninja -C $build_dir"
ninja -C "$build_dir" || die "build failed"

if [ "$run" -eq 0 ]; then
	say "done: built into $build_dir/ (--no-run: not starting hodei-auditd)"
	exit 0
fi

daemon="$build_dir/tools/hodei-auditd"
[ -x "$daemon" ] || die "$daemon was not built"
say "run: $daemon $*"
exec "$daemon" "$@"

#!/bin/sh
# Builds a Go command from a module folder of this repository into a cache file, once: the one
# build script behind vault/devserver/build.sh, policies/opabin/build.sh and
# bench/opaenvoy/build.sh. Idempotent (it builds only when the binary is missing), and
# concurrent runs wait for each other (flock) and then find the binary; the binary appears
# only when complete (built to a temporary name, then renamed).
#
#   .ci/cached-go-build.sh NAME MODULE_DIR BIN [HOW_LONG]
#
#   NAME        what is built, for the messages ("Vault 1.21.1")
#   MODULE_DIR  the folder whose main package is built, with its own go.mod and go.sum
#   BIN         the binary's path (its folder is created)
#   HOW_LONG    a hint printed when the build starts ("about 4 minutes on 2 cores")
#
# Builds with GOWORK=off and -mod=readonly (the folder's go.sum pins every module), -trimpath,
# no symbol table. Needs the Go module proxy the first time.
set -eu

if [ $# -lt 3 ]; then
	echo "usage: cached-go-build.sh NAME MODULE_DIR BIN [HOW_LONG]" >&2
	exit 2
fi
name=$1
src=$(cd "$2" && pwd)
bin=$3
how_long=${4:-a few minutes on 2 cores}
me=$(basename "$0")

if [ -x "$bin" ]; then
	echo "$me: $name already present: $bin"
	exit 0
fi
dir=$(dirname "$bin")
mkdir -p "$dir" || { echo "$me: cannot create $dir" >&2; exit 1; }

# One build at a time: a second caller waits for the first and then finds the binary.
if command -v flock >/dev/null 2>&1; then
	exec 9>"$bin.lock"
	if ! flock -n 9; then
		echo "$me: another build of $bin is running; waiting for it"
		flock 9
	fi
	if [ -x "$bin" ]; then
		echo "$me: $name built by the other run: $bin"
		exit 0
	fi
fi

tmp="$bin.tmp.$$"
trap 'rm -f "$tmp"' EXIT INT TERM
echo "$me: building $name from $src into $bin ($how_long)"
start=$(date +%s)
if ! (cd "$src" && GOWORK=off GOFLAGS=-mod=readonly go build -trimpath -ldflags='-s -w' -o "$tmp" .); then
	echo "$me: go build of $name failed; see the output above" >&2
	exit 1
fi
mv -f "$tmp" "$bin"
trap - EXIT INT TERM
echo "$me: built $name in $(($(date +%s) - start))s: $bin"

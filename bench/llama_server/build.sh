#!/usr/bin/env bash
# Builds llama.cpp's `llama-server` once, offline, from the llama.cpp sources that
# node-llama-cpp's npm package ships (node_modules/node-llama-cpp/llama/gitRelease.bundle, a git
# bundle of the release named in binariesGithubRelease.json), so the benchmark compares ATLAS
# with the same llama.cpp release its engine runs. CPU only, Release, native (-march=native)
# without AMX: on VMs that report AMX but do not grant it (e.g. Firecracker guests), ggml's AMX
# kernels die with SIGILL as soon as a model with quantized weights loads.
#
# The build is cached outside the repository and reused:
#   ${XDG_CACHE_HOME:-$HOME/.cache}/atlas-bench/llama-server-<release>-noamx/
#     src/                        the clone of the bundle
#     src/build/bin/llama-server  the binary
#     cmake.log, build.log        configure and build output; build.log ends with "exit <code>"
#     build.lock                  held (flock) while this script builds
#
# A build of that folder already running (this script, or the same commands started by hand:
# build.log without its "exit" line and a process working in src/) is waited for, never
# started twice. On success the binary's path is the only line on stdout; progress goes to
# stderr. ~6-10 minutes on 2 cores.
#
#   bash bench/llama_server/build.sh           # build or reuse; prints the binary's path
#   bash bench/llama_server/build.sh --check   # prints the path if built, exits 1 otherwise
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
llama="$repo/node_modules/node-llama-cpp/llama"
bundle="$llama/gitRelease.bundle"
release="$(sed -n 's/.*"release"[[:space:]]*:[[:space:]]*"\([^"]*\)".*/\1/p' "$llama/binariesGithubRelease.json")"
if [[ -z "$release" || ! -f "$bundle" ]]; then
  echo "llama-server build: node-llama-cpp's llama.cpp sources not found under $llama (npm install first)" >&2
  exit 2
fi
dir="${XDG_CACHE_HOME:-$HOME/.cache}/atlas-bench/llama-server-$release-noamx"
src="$dir/src"
bin="$src/build/bin/llama-server"
log="$dir/build.log"

say() { echo "llama-server build: $*" >&2; }

# "exit <code>" when the last build finished, empty while one runs or before the first.
last_exit() { [[ -f "$log" ]] && tail -n 1 "$log" | sed -n 's/^exit \([0-9]*\)$/\1/p' || true; }

# Whether some process (other than this script) works in the clone: a build in progress.
building() {
  local p cwd
  for p in /proc/[0-9]*; do
    [[ "${p#/proc/}" == "$$" ]] && continue
    cwd="$(readlink "$p/cwd" 2>/dev/null)" || continue
    case "$cwd" in "$src" | "$src"/*) return 0 ;; esac
  done
  return 1
}

built() { [[ -x "$bin" ]] && { [[ ! -f "$log" ]] || [[ "$(last_exit)" == "0" ]]; }; }

if [[ "${1:-}" == "--check" ]]; then
  if built && ! building; then echo "$bin"; exit 0; fi
  exit 1
fi

mkdir -p "$dir"

wait_for_other() {
  local waited=0
  while [[ -f "$log" && -z "$(last_exit)" ]] && building; do
    if ((waited % 60 == 0)); then
      say "a build of $src is already running ($(grep -o '^\[ *[0-9]*%\]' "$log" | tail -n 1 || echo 'configuring')); waiting for it"
    fi
    sleep 5
    waited=$((waited + 5))
  done
}

wait_for_other
if built; then
  echo "$bin"
  exit 0
fi

# Our own builds hold this lock; a second run of this script waits here.
exec 9>"$dir/build.lock"
if ! flock -n 9; then
  say "another run of this script is building; waiting for it"
  flock 9
fi
wait_for_other
if built; then
  echo "$bin"
  exit 0
fi

if [[ ! -d "$src/.git" ]]; then
  say "cloning $bundle ($release) into $src"
  rm -rf "$src.tmp"
  git clone --quiet "$bundle" "$src.tmp" >&2
  mv "$src.tmp" "$src"
fi

cpus="$(nproc 2>/dev/null || echo 2)"
say "configuring and building $release with $cpus jobs (~6-10 min on 2 cores); log: $log"
started=$(date +%s)
set +e
(
  cd "$src" &&
    cmake -B build -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
      -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_OPENSSL=OFF \
      -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF \
      "-DCMAKE_C_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" \
      "-DCMAKE_CXX_FLAGS=-mno-amx-tile -mno-amx-int8 -mno-amx-bf16" >../cmake.log 2>&1 &&
    cmake --build build --target llama-server -j "$cpus" >../build.log 2>&1
)
code=$?
set -e
echo "exit $code" >>"$log"
if [[ $code -ne 0 || ! -x "$bin" ]]; then
  say "failed (exit $code); see $dir/cmake.log and $log"
  exit 1
fi
say "built in $(($(date +%s) - started)) s: $bin"
echo "$bin"

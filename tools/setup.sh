#!/bin/sh
# Install what building and testing weblora needs, only where it is missing (idempotent; Debian 12, as root or
# with sudo). Usage: tools/setup.sh [--browser] [--icons]   (--browser adds Debian's chromium for the browser tests,
# --icons librsvg's rsvg-convert for tools/icons.sh)
set -eu
cd "$(dirname "$0")/.."

need=""
command -v cmake >/dev/null 2>&1 || need="$need cmake"
command -v gcc >/dev/null 2>&1 || need="$need gcc"
command -v make >/dev/null 2>&1 || need="$need make"
command -v emcc >/dev/null 2>&1 || need="$need emscripten"
[ -f /usr/include/simde/wasm/simd128.h ] || need="$need libsimde-dev"
# clang 19 and its wasm-ld for the relaxed-SIMD builds of the core (tools/build.sh: emcc 3.1.6 predates relaxed SIMD)
command -v clang-19 >/dev/null 2>&1 || need="$need clang-19"
command -v wasm-ld-19 >/dev/null 2>&1 || need="$need lld-19"
# clang with libFuzzer for tools/fuzz (the fuzzing run in npm test)
command -v clang-14 >/dev/null 2>&1 || need="$need clang-14"
ls /usr/lib/llvm-14/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need="$need libclang-rt-14-dev"
for arg in "$@"; do
  case "$arg" in
    --browser) command -v chromium >/dev/null 2>&1 || need="$need chromium" ;;
    --icons) command -v rsvg-convert >/dev/null 2>&1 || need="$need librsvg2-bin" ;;
    *) echo "weblora setup: unknown option $arg" >&2; exit 2 ;;
  esac
done

if [ -n "$need" ]; then
  echo "weblora setup: installing$need" >&2
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -q >&2
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -q --no-install-recommends $need >&2
fi

# npm dependencies: install when node_modules is missing, incomplete (no .package-lock.json: an install that was cut
# short or emptied; dash's -nt is false when the second file is missing) or older than the lock file.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "weblora setup: installing npm dependencies" >&2
  npm ci --no-audit --no-fund >&2 || npm install --no-audit --no-fund >&2
fi

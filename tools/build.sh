#!/bin/sh
# Build the C core: native (build/native), native with ASan+UBSan (build/asan), native with ThreadSanitizer
# (build/tsan) and WebAssembly (build/wasm: web/weblora.wasm and web/weblora-threads.wasm); dist: the package's
# no-bundler build (dist/, tools/bundle.js) from web/ and the wasm builds, so it comes after wasm.
# Usage: tools/build.sh [native] [asan] [tsan] [wasm] [dist]   (default: wasm only)
set -eu
cd "$(dirname "$0")/.."
targets="${*:-wasm}"
jobs=$(nproc 2>/dev/null || echo 2)
for t in $targets; do
  case "$t" in
    native)
      cmake -S . -B build/native -DCMAKE_BUILD_TYPE=Release >/dev/null
      cmake --build build/native -j "$jobs" >&2 ;;
    asan)
      cmake -S . -B build/asan -DCMAKE_BUILD_TYPE=Debug -DWL_SANITIZE=ON >/dev/null
      cmake --build build/asan -j "$jobs" >&2 ;;
    tsan)
      # Only the thread pool's test runs under ThreadSanitizer (tools/test.sh): build just that.
      cmake -S . -B build/tsan -DCMAKE_BUILD_TYPE=Debug -DWL_TSAN=ON >/dev/null
      cmake --build build/tsan -j "$jobs" --target test_threads >&2 ;;
    wasm)
      # emcc runs its JS optimiser with Debian's node modules.
      export NODE_PATH=/usr/share/nodejs
      emcmake cmake -S . -B build/wasm -DCMAKE_BUILD_TYPE=Release >/dev/null 2>&1 \
        || emcmake cmake -S . -B build/wasm -DCMAKE_BUILD_TYPE=Release >&2
      cmake --build build/wasm -j "$jobs" >&2
      cp build/wasm/weblora.wasm build/wasm/weblora-threads.wasm web/ ;;
    dist)
      node tools/bundle.js ;;
    *) echo "unknown build target: $t" >&2; exit 2 ;;
  esac
done

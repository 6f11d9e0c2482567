#!/bin/sh
# Build the C core: native (build/native), native with ASan+UBSan (build/asan), native with ThreadSanitizer
# (build/tsan) and WebAssembly, beside web/runtime/wasm.js that loads them: web/runtime/weblora.wasm and
# weblora-threads.wasm (SIMD128, Debian's emcc, build/wasm), and weblora-relaxed.wasm and weblora-relaxed-threads.wasm
# (relaxed SIMD, build/wasm-relaxed), the benchmarks' builds (build/wasm/weblora-bench.wasm,
# build/wasm-relaxed/weblora-bench-relaxed.wasm: npm run bench, never shipped) and web/core/abi.js, the C/JS boundary
# as the module describes it (tools/abi.js); dist: the package's no-bundler build (dist/, tools/bundle.js) from web/
# and the wasm builds, so it comes after wasm.
# Usage: tools/build.sh [native] [asan] [tsan] [wasm] [dist]   (default: wasm only)
set -eu
cd "$(dirname "$0")/.."
targets="${*:-wasm}"
jobs=$(nproc 2>/dev/null || echo 2)

# The relaxed-SIMD builds of the core (fused multiply-adds in the GEMM). Debian's emcc 3.1.6 cannot make them: its
# clang 14 and binaryen 108 predate relaxed SIMD's final opcodes. So clang 19 compiles the same sources for the same
# target (wasm32-unknown-emscripten, emcc's defines and sysroot) and wasm-ld 19 links them with the same Emscripten
# system libraries and flags as the emcc builds of CMakeLists.txt (emcc -v shows its wasm-ld line), without
# binaryen's passes. Both builds import and export exactly what the SIMD128 builds do (web/runtime/wasm.js loads any).
# Usage: build_relaxed NAME OUTPUT_DIR [extra compile flags] -- [extra link flags]
# NAME weblora-bench-relaxed links weblora-relaxed's objects (same flags, built just before) with the benchmarks.
build_relaxed() {
  name=$1
  dest=$2
  shift 2
  cflags=""
  while [ "$1" != "--" ]; do cflags="$cflags $1"; shift; done
  shift
  sysroot=$(em-config CACHE)/sysroot
  out=build/wasm-relaxed/$name
  rm -rf "$out"
  mkdir -p "$out"
  objs=""
  if [ "$name" = weblora-bench-relaxed ]; then
    objs=$(ls build/wasm-relaxed/weblora-relaxed/*.o)
    set -- src/wasm/bench.c src/wasm/bench_quant.c -- "$@"
  else
    # shellcheck disable=SC2046
    set -- $(ls src/core/*.c src/io/*.c src/model/*.c src/layers/*.c src/lora/*.c src/optim/*.c src/svd/*.c \
      src/kernels/*.c src/kernels/scalar/*.c src/kernels/wasmsimd/*.c src/wasm/exports.c src/wasm/abi.c) -- "$@"
  fi
  for src in "$@"; do
    [ "$src" = "--" ] && break
    objs="$objs $out/$(echo "$src" | tr / _).o"
  done
  # shellcheck disable=SC2086
  for src in "$@"; do [ "$src" = "--" ] && break; echo "$src"; done | xargs -P "$jobs" -I{} sh -c '
    obj="$0/$(echo "$1" | tr / _).o"
    clang-19 --target=wasm32-unknown-emscripten --sysroot="$2" -Xclang -iwithsysroot/include/compat -DEMSCRIPTEN \
      -D__EMSCRIPTEN_major__=3 -D__EMSCRIPTEN_minor__=1 -D__EMSCRIPTEN_tiny__=6 -fignore-exceptions \
      -fvisibility=default -std=c11 -O3 -DNDEBUG -msimd128 -mrelaxed-simd $3 -Iinclude -Isrc \
      -Wall -Wextra -Wshadow -Wno-unused-parameter -Wstrict-prototypes -Werror=implicit-function-declaration \
      -Werror=incompatible-pointer-types -Werror=return-type -c "$1" -o "$obj"' "$out" {} "$sysroot" "$cflags"
  while [ "$1" != "--" ]; do shift; done
  shift
  lib=$sysroot/lib/wasm32-emscripten
  # shellcheck disable=SC2086
  wasm-ld-19 -o "$dest/$name.wasm" "$@" $objs -L"$lib" "$lib/crt1_reactor.o" -lGL -lal -lhtml5 \
    -lstandalonewasm-memgrow -lstubs -lnoexit -lc -ldlmalloc -lcompiler_rt -lc++-noexcept -lc++abi-noexcept \
    -lsockets --import-undefined --strip-debug --export-if-defined=__start_em_asm --export-if-defined=__stop_em_asm \
    --export=stackSave --export=stackRestore --export=stackAlloc --export=__errno_location --export-table \
    -z stack-size=1048576 --initial-memory=33554432 --entry=_initialize --max-memory=4294967296 --global-base=1024
}
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
      cp build/wasm/weblora.wasm build/wasm/weblora-threads.wasm web/runtime/
      build_relaxed weblora-relaxed web/runtime --
      build_relaxed weblora-relaxed-threads web/runtime -matomics -mbulk-memory -- --shared-memory --import-memory
      build_relaxed weblora-bench-relaxed build/wasm-relaxed --
      node tools/abi.js ;;
    dist)
      node tools/bundle.js ;;
    *) echo "unknown build target: $t" >&2; exit 2 ;;
  esac
done

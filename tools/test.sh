#!/bin/sh
# Everything `npm test` runs: C unit tests natively and under ASan+UBSan (ctest), the thread pool's tests under
# ThreadSanitizer, a short fuzzing run of every parser (tools/fuzz/run.sh), then the JavaScript suites (wasm
# numerics, package, CLI, browser) under Jest, whose summary line ends the output.
set -eu
cd "$(dirname "$0")/.."
sh tools/setup.sh --browser
sh tools/build.sh native asan tsan wasm dist
jobs=$(nproc 2>/dev/null || echo 2)
echo "== C unit tests (native)"
ctest --test-dir build/native --output-on-failure -j "$jobs"
echo "== C unit tests (AddressSanitizer + UndefinedBehaviorSanitizer)"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/asan --output-on-failure -j "$jobs"
echo "== C thread pool tests (ThreadSanitizer)"
TSAN_OPTIONS=halt_on_error=1 ctest --test-dir build/tsan --output-on-failure -R test_threads
echo "== Fuzzing every parser of untrusted bytes (5 s each; npm run fuzz runs 10 minutes each)"
sh tools/fuzz/run.sh 5
echo "== JavaScript tests (Jest: wasm core under Node, package, CLI, browser)"
NODE_OPTIONS="--experimental-vm-modules --no-warnings" npx jest --ci "$@"

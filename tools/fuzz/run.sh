#!/bin/sh
# Fuzz every parser of untrusted bytes for a fixed time each: the C parsers (safetensors whole and header-only, JSON,
# config.json, llama2.c) as libFuzzer targets under ASan+UBSan, and the JavaScript ones (llama2.c tokenizer.bin,
# PEFT adapter_config.json) with tools/fuzz/fuzz_js.mjs. Each starts from its seed corpus in tests/fuzz/corpus/
# (inputs found to add coverage are kept in build/fuzz/corpus/, never in the repository). `npm test` runs a few
# seconds per target; `npm run fuzz` ten minutes.
# Usage: tools/fuzz/run.sh [seconds per target]   (default 600; extra libFuzzer flags via FUZZ_FLAGS)
set -eu
cd "$(dirname "$0")/../.."
secs="${1:-600}"
out=build/fuzz
mkdir -p "$out/obj" "$out/crashes"
cc=clang-14
command -v "$cc" >/dev/null 2>&1 || cc=clang
flags="-std=c11 -g -O1 -fsanitize=address,undefined -fno-sanitize-recover=all -Iinclude -Isrc"

# The library, instrumented once; each target links it with its own entry point. An object is rebuilt when its
# source or any header is newer (a changed struct must never meet objects compiled against the old layout).
objs=""
for src in src/core/*.c src/io/*.c src/model/*.c src/layers/*.c src/lora/*.c src/optim/*.c src/svd/*.c \
  src/kernels/*.c src/kernels/scalar/*.c; do
  obj="$out/obj/$(echo "$src" | tr / _).o"
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ -n "$(find include src -name '*.h' -newer "$obj" | head -n 1)" ]; then
    # shellcheck disable=SC2086
    $cc $flags -fsanitize=fuzzer-no-link -c "$src" -o "$obj"
  fi
  objs="$objs $obj"
done

# Refresh the committed seed corpus (it must stay valid as formats evolve).
# shellcheck disable=SC2086
$cc -std=c11 -O1 -Iinclude -Isrc -Itests/c tools/fuzz/seeds.c tests/c/util_safetensors.c $(echo "$objs") \
  -fsanitize=address,undefined -lm -o "$out/seeds"
for t in safetensors safetensors_header json config llama2c; do mkdir -p "tests/fuzz/corpus/$t"; done
"$out/seeds" tests/fuzz/corpus

n=0
status=0
for target in safetensors safetensors_header json config llama2c; do
  # shellcheck disable=SC2086
  $cc $flags -fsanitize=fuzzer -DWL_FUZZ_TARGET=$n tools/fuzz/fuzz_io.c $objs -lm -o "$out/fuzz_$target"
  mkdir -p "$out/corpus/$target"
  echo "== fuzz $target (${secs} s)"
  # shellcheck disable=SC2086
  if ! "$out/fuzz_$target" -max_total_time="$secs" -max_len=4096 -timeout=10 -artifact_prefix="$out/crashes/$target-" \
      -print_final_stats=1 ${FUZZ_FLAGS:-} "$out/corpus/$target" "tests/fuzz/corpus/$target" 2>"$out/$target.log"; then
    status=1
    tail -n 40 "$out/$target.log"
  fi
  # One line per target: runs, coverage (edges), features, corpus size.
  grep -E 'DONE +cov:' "$out/$target.log" | tail -n 1 || tail -n 3 "$out/$target.log"
  grep -E 'stat::number_of_executed_units' "$out/$target.log" || true
  n=$((n + 1))
done

echo "== fuzz JavaScript parsers (${secs} s each)"
node tools/fuzz/fuzz_js.mjs "$secs" || status=1
exit $status

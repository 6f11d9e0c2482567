#!/bin/sh
# Build the libFuzzer target for the io parsers (clang, ASan + UBSan) into build/fuzz and run it on a small
# generated seed corpus. Usage: tools/fuzz/run.sh [seconds]   (default 120; extra libFuzzer flags via FUZZ_FLAGS)
set -eu
cd "$(dirname "$0")/../.."
secs="${1:-120}"
out=build/fuzz
mkdir -p "$out/corpus" "$out/crashes"
srcs="src/core/*.c src/io/*.c src/model/*.c src/layers/*.c src/lora/*.c src/kernels/*.c src/kernels/scalar/*.c"
# shellcheck disable=SC2086
clang -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -Iinclude -Isrc \
  tools/fuzz/fuzz_io.c $srcs -lm -o "$out/fuzz_io"

# Seeds: one valid input per parser, written by the library itself.
# shellcheck disable=SC2086
clang -std=c11 -O1 -Iinclude -Isrc tools/fuzz/seeds.c $srcs -lm -o "$out/seeds"
"$out/seeds" "$out/corpus"

# shellcheck disable=SC2086
"$out/fuzz_io" -max_total_time="$secs" -max_len=4096 -artifact_prefix="$out/crashes/" -print_final_stats=1 \
  ${FUZZ_FLAGS:-} "$out/corpus"

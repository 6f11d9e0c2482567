#!/bin/sh
# make.sh: rebuilds the default model end to end: corpus -> tokenizer -> random init -> full-parameter training with
# the weblora CLI -> demo/models/default (F16). Deterministic for the seeds below and a given build of the wasm core.
# Usage: sh tools/default-model/make.sh [all|corpus|tokenizer|init|train|package|check]   (default: all)
# Takes about an hour of one core for training; every step reuses the previous step's output in $BUILD.
set -eu
cd "$(dirname "$0")/../.."

BUILD=build/default-model
DEST=demo/models/default
FORTUNES=/usr/share/games/fortunes

# Tokenizer.
VOCAB=4096
# Model shape (Llama: RMSNorm, RoPE, SwiGLU, GQA 2:1, tied embeddings).
DIM=256
LAYERS=6
HEADS=8
KV_HEADS=4
HIDDEN=704
CONTEXT=256
INIT_SEED=1
# Training.
LR=2e-3
WARMUP=100
STEPS=2800
BATCH=4
SEQ=256
WEIGHT_DECAY=0.1
CLIP=1
EVAL_SPLIT=0.02
TRAIN_SEED=1

step="${1:-all}"
run() { [ "$step" = all ] || [ "$step" = "$1" ]; }

if run corpus; then
  [ -d "$FORTUNES" ] || { echo "make.sh: $FORTUNES is missing: apt-get install fortunes fortunes-min" >&2; exit 1; }
  node tools/default-model/build-corpus.js --src "$FORTUNES" --out "$BUILD"
fi

if run tokenizer; then
  node tools/default-model/train-tokenizer.js --data "$BUILD/corpus.jsonl" --vocab "$VOCAB" --max-length "$CONTEXT" \
    --out "$BUILD/tokenizer"
  node tools/default-model/check-tokenizer.js --tokenizer "$BUILD/tokenizer" --data "$BUILD/corpus.jsonl"
fi

if run init; then
  node tools/default-model/init-model.js --tokenizer "$BUILD/tokenizer" --out "$BUILD/init" --dim "$DIM" \
    --layers "$LAYERS" --heads "$HEADS" --kv-heads "$KV_HEADS" --hidden "$HIDDEN" --context "$CONTEXT" --seed "$INIT_SEED"
fi

if run train; then
  # One JSON line per step in train.jsonl; the held-out loss before and after is in its "eval" and "done" lines.
  node web/cli.js train --model "$BUILD/init" --data "$BUILD/corpus.jsonl" --full --optimizer adamw --lr "$LR" \
    --schedule cosine --warmup "$WARMUP" --weight-decay "$WEIGHT_DECAY" --clip "$CLIP" --steps "$STEPS" \
    --batch "$BATCH" --seq "$SEQ" --eval-split "$EVAL_SPLIT" --seed "$TRAIN_SEED" --out "$BUILD/trained" --force \
    --json > "$BUILD/train.jsonl"
  grep '"event":"done"' "$BUILD/train.jsonl"
fi

if run package; then
  node tools/default-model/package-model.js --from "$BUILD/trained" --to "$DEST" --dtype f16
fi

if run check || run package; then
  # The F16 copy must score like the F32 model it came from on the same held-out sequences.
  node tools/default-model/eval-heldout.js --model "$DEST" --data "$BUILD/corpus.jsonl" --seq "$SEQ" \
    --eval-split "$EVAL_SPLIT" --seed "$TRAIN_SEED"
  for prompt in "The best thing about" "A man walked into a bar" "Love is"; do
    node web/cli.js generate --model "$DEST" --prompt "$prompt" --max-tokens 60 --temperature 0
    node web/cli.js generate --model "$DEST" --prompt "$prompt" --max-tokens 60 --temperature 0.8 --top-k 40 --seed 1
  done
fi

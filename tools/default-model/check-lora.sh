#!/bin/sh
# check-lora.sh: shows that a LoRA fine-tune of the default model on demo/data/personal-style.txt takes on its voice:
# held-out loss before and after, and the same prompts generated without and with the adapter.
# Usage: sh tools/default-model/check-lora.sh [MODEL_DIR] [OUT_DIR]
set -eu
cd "$(dirname "$0")/../.."
model="${1:-demo/models/default}"
out="${2:-build/default-model/lora-check}"
data=demo/data/personal-style.txt
cli="node web/cli.js"

mkdir -p "$(dirname "$out")"
start=$(date +%s)
$cli train --model "$model" --data "$data" --rank 8 --alpha 16 \
  --targets q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
  --optimizer adamw --lr 3e-3 --schedule cosine --warmup 10 --steps 100 --batch 4 --seq 128 \
  --eval-split 0.1 --seed 1 --out "$out" --force --json > "$out.jsonl"
end=$(date +%s)
grep '"event":"done"' "$out.jsonl" | node -e '
  const d = JSON.parse(require("fs").readFileSync(0, "utf8"));
  console.log(`LoRA: ${d.steps} steps in ${d.seconds.toFixed(1)} s, ${d.tokensPerSecond.toFixed(0)} tok/s; held-out loss ${d.evalLossBefore.toFixed(3)} -> ${d.evalLoss.toFixed(3)}`);'
echo "wall time including loading: $((end - start)) s"

for prompt in "Monday. Wind from the" "The sea" "My sister"; do
  for mode in base adapter; do
    if [ "$mode" = base ]; then extra=""; else extra="--adapter $out"; fi
    printf '\n[%s, greedy] ' "$mode"
    # shellcheck disable=SC2086
    $cli generate --model "$model" $extra --prompt "$prompt" --max-tokens 48 --temperature 0
    printf '[%s, sampled] ' "$mode"
    # shellcheck disable=SC2086
    $cli generate --model "$model" $extra --prompt "$prompt" --max-tokens 48 --temperature 0.8 --top-k 40 --seed 7
  done
done

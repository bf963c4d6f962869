#!/usr/bin/env bash
# The main job on a fresh machine, CPU only, no download: set up, make a small random-weight
# Qwen3 checkpoint, then sample from it and score text with it.
# (The demo issue replaces this with pretraining a tiny model and teaching it to think.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

model=runs/demo/tiny-qwen3
if [ ! -f "$model/model.safetensors" ]; then
  echo "== making a random-weight Qwen3 checkpoint in $model"
  .venv/bin/python scripts/tiny_models.py single "$model" --arch qwen3 --hidden 128 --layers 4 \
    --heads 4 --kv-heads 2 --intermediate 384 >/dev/null
fi

prompts='{"text": "The quick brown fox"}
{"text": "47 + 38 ="}
{"text": "Paris is the capital of"}'

echo "== rlp generate (temperature 0.8, top-p 0.95, seed 0)"
echo "$prompts" | target/release/rlp generate --model "$model" --max-new-tokens 16 \
  --temperature 0.8 --top-p 0.95 --seed 0
echo "== rlp score"
echo "$prompts" | target/release/rlp score --model "$model" >/dev/null

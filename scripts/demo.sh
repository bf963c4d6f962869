#!/usr/bin/env bash
# The main job: on CPU, with no download, show a tiny model learning to use its thoughts.
#   a. `rlp data synth` writes a procedural world (arithmetic and list tasks) as worked examples
#      (the working inside <think> … </think>) and plain statements; the worked examples come from
#      a careless teacher who forgets an addition's carry 60% of the time (`--careless 0.6`), the
#      plain statements are true; a tiny Qwen3 is pretrained from scratch on the mix with the
#      next-token objective, so it thinks right only about half of the time;
#   b. from that checkpoint, on plain statements only: RLP, and compute-matched next-token
#      training, three seeds each (`rlp ablate configs/demo/compare.toml`);
#   c. the table: held-out answer-token accuracy and NLL without a thought and with a greedy
#      thought, for the pretrained base, after NTP and after RLP (runs/demo/compare/report/).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
rlp=target/release/rlp
out=runs/demo
mkdir -p "$out"
start=$(date +%s)

if [ ! -f "$out/world/eval.jsonl" ]; then
  $rlp data synth --output "$out/world" --documents 1000 --seed 0 --careless 0.6
fi
if [ ! -f "$out/model-init/config.json" ]; then
  $rlp init --tokenizer "$out/world/tokenizer" --output "$out/model-init" \
    --hidden 128 --layers 4 --heads 4 --kv-heads 2 --intermediate 384 --max-positions 256 --seed 0
fi
for split in pretrain plain heldout; do
  [ -f "$out/data-$split/meta.json" ] || $rlp data prepare --model "$out/model-init" --output "$out/data-$split" "$out/world/$split.jsonl"
done

echo "== a. pretraining from scratch (next-token loss, mixed corpus)"
$rlp train --config configs/demo/pretrain.toml --model "$out/model-init" --data "$out/data-pretrain" \
  --run-dir "$out/pretrain" --set 'eval.data="runs/demo/data-heldout"' --resume
pretrained=$(ls -d "$out"/pretrain/checkpoints/step-* | tail -n 1)/model

echo "== b. RLP vs compute-matched next-token training on plain statements, 3 seeds"
$rlp ablate configs/demo/compare.toml --model "$pretrained" --data "$out/data-plain"

echo "== c. results ($(( $(date +%s) - start )) s)"
cat "$out/compare/report/README.md"

"""Independent recomputation of a training step's scores with transformers.

  check_dump.py MODEL DUMP OUT

MODEL is the policy as it was when the dumped step sampled its thoughts (for step 1: the starting
model, which is also the EMA teacher then). For every context b and thought g, with full forwards
and no cache: S_pred[b,g] = sum_s log p(target_s | context, thought, targets_<s) and
S_ema[b] = sum_s log p(target_s | context, targets_<s). Writes them to OUT (safetensors).
"""
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM


@torch.no_grad()
def target_logprob(model, prefix, targets):
    ids = torch.tensor([prefix + targets])
    logp = model(ids).logits[0].float().log_softmax(-1)
    start = len(prefix)
    return sum(logp[start - 1 + s, t].item() for s, t in enumerate(targets))


def main():
    model_dir, dump_path, out = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    d = load_file(dump_path)
    B, G = d["thought_len"].shape
    s_pred = torch.zeros(B, G)
    s_ema = torch.zeros(B)
    for b in range(B):
        ctx = d["context_ids"][b, : d["context_len"][b]].tolist()
        targets = d["target_ids"][b].tolist()
        s_ema[b] = target_logprob(model, ctx, targets)
        for g in range(G):
            thought = d["thought_ids"][b, g, : d["thought_len"][b, g]].tolist()
            s_pred[b, g] = target_logprob(model, ctx + thought, targets)
    save_file({"s_pred": s_pred, "s_ema": s_ema}, out)


if __name__ == "__main__":
    main()

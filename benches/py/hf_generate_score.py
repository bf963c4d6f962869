"""The PyTorch + transformers peer of benches/generate_score.rs: the same workloads on the same
checkpoint, timed the same way (warm-up, then the median of `reps` runs). Prints one JSON object."""
import argparse
import json
import statistics
import time

import torch
from transformers import AutoModelForCausalLM


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, reps, device):
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


@torch.no_grad()
def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--score-batch", type=int, default=8)
    p.add_argument("--score-len", type=int, default=256)
    p.add_argument("--gen-batches", default="1,8")
    p.add_argument("--prompt-len", type=int, default=32)
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--reps", type=int, default=3)
    a = p.parse_args()
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype)).to(a.device).eval()
    vocab = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    out = {"threads": torch.get_num_threads()}

    ids = torch.randint(1, vocab, (a.score_batch, a.score_len), generator=g).to(a.device)

    def score():
        logits = model(ids).logits.float()
        return logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None])

    out["score_tokens_per_s"] = a.score_batch * a.score_len / timed(score, a.reps, a.device)

    for b in [int(x) for x in a.gen_batches.split(",")]:
        prompt = torch.randint(1, vocab, (b, a.prompt_len), generator=g).to(a.device)

        def gen():
            return model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                  max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens,
                                  eos_token_id=None, pad_token_id=0)

        out[f"generate_b{b}_tokens_per_s"] = b * a.new_tokens / timed(gen, a.reps, a.device)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

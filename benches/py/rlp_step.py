"""The PyTorch + transformers peer of benches/rlp_step.rs: one RLP step written the way a
researcher would in Python, on the same checkpoint, data and shapes, timed in the same three
parts (rollout / score / update). Prints one JSON object with the median of each part.

  rollout: G thoughts per context with model.generate (sampling, eos = </think>), behaviour log-probs
  score:   S_ema = log p_ema(x_t | x_<t) under the EMA copy
  update:  forward over context+thought+target (S_pred and action log-probs), LOO advantage,
           PPO-clip seq-mean-token-mean loss, backward, grad clip, AdamW, EMA update
"""
import argparse
import copy
import json
import statistics
import time

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("data")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--contexts", type=int, default=8)
    p.add_argument("--group", type=int, default=4)
    p.add_argument("--context-len", type=int, default=128)
    p.add_argument("--thought-tokens", type=int, default=32)
    p.add_argument("--steps", type=int, default=3)
    a = p.parse_args()
    dev = a.device
    tok = AutoTokenizer.from_pretrained(a.model)
    tok.add_special_tokens({"additional_special_tokens": ["<think>", "</think>"]})
    open_id, close_id = tok.convert_tokens_to_ids("<think>"), tok.convert_tokens_to_ids("</think>")
    policy = AutoModelForCausalLM.from_pretrained(a.model, dtype=getattr(torch, a.dtype)).to(dev)
    if policy.config.vocab_size <= close_id:
        policy.resize_token_embeddings(close_id + 1)
    ema = copy.deepcopy(policy).eval().requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)

    tokens = np.fromfile(f"{a.data}/train.tokens", dtype="<u4")
    offsets = np.fromfile(f"{a.data}/train.offsets", dtype="<u8")
    long_docs = [i for i in range(len(offsets) - 1) if offsets[i + 1] - offsets[i] > a.context_len]
    rng = np.random.default_rng(0)
    B, G, T = a.contexts, a.group, 1.0

    def contexts():
        out = []
        for d in rng.choice(long_docs, B):
            lo, hi = int(offsets[d]), int(offsets[d + 1])
            t = int(rng.integers(lo + a.context_len, hi))
            out.append((tokens[t - a.context_len:t].astype(np.int64).tolist(), int(tokens[t])))
        return out

    def step():
        times = {}
        ctx = contexts()
        t0 = time.perf_counter()
        with torch.no_grad():
            prompts = torch.tensor([c + [open_id] for c, _ in ctx], device=dev)
            out = policy.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, temperature=T,
                                  top_k=0, top_p=1.0, max_new_tokens=a.thought_tokens, num_return_sequences=G,
                                  eos_token_id=close_id, pad_token_id=0, return_dict_in_generate=True, output_logits=True)
            new = out.sequences[:, prompts.shape[1]:]
            logits = torch.stack(out.logits, 1).float() / T
            old_logp = logits.log_softmax(-1).gather(-1, new[..., None])[..., 0]
        thoughts = []
        for r in range(B * G):
            ids = new[r].tolist()
            n = ids.index(close_id) + 1 if close_id in ids else len(ids)
            thoughts.append((ids[:n], old_logp[r, :n], close_id in ids[:n]))
        sync(dev)
        times["rollout"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        with torch.no_grad():
            rows = torch.tensor([c + [x] for c, x in ctx], device=dev)
            lp = ema(rows).logits[:, -2].float().log_softmax(-1)
            s_ema = lp.gather(-1, rows[:, -1:])[:, 0]
        sync(dev)
        times["score"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        seqs, act_pos, tgt_pos, olds = [], [], [], []
        for r, (ids, old, closed) in enumerate(thoughts):
            c, x = ctx[r // G]
            th = [open_id] + ids + ([] if closed else [close_id])
            seqs.append(c + th + [x])
            act_pos.append(list(range(len(c), len(c) + len(ids))))  # positions predicting the sampled tokens
            tgt_pos.append(len(c) + len(th) - 1)
            olds.append(old)
        width = max(map(len, seqs))
        ids = torch.zeros(len(seqs), width, dtype=torch.long, device=dev)
        mask = torch.zeros(len(seqs), width, dtype=torch.long, device=dev)
        for r, s in enumerate(seqs):
            ids[r, :len(s)] = torch.tensor(s, device=dev)
            mask[r, :len(s)] = 1
        out = policy(ids, attention_mask=mask).logits.float()
        s_pred = torch.stack([out[r, tgt_pos[r]].log_softmax(-1)[seqs[r][-1]] for r in range(len(seqs))]).detach()
        reward = (s_pred.view(B, G) - s_ema[:, None])
        adv = (reward - reward.mean(1, keepdim=True)) * G / (G - 1)
        losses = []
        for r in range(len(seqs)):
            pos = torch.tensor(act_pos[r], device=dev)
            tgt = ids[r, pos + 1]
            logp = (out[r, pos] / T).log_softmax(-1).gather(-1, tgt[:, None])[:, 0]
            ratio = torch.exp(logp - olds[r])
            A = adv.view(-1)[r]
            losses.append(-torch.min(ratio * A, ratio.clamp(0.8, 1.2) * A).mean())
        loss = torch.stack(losses).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for pe, pp in zip(ema.parameters(), policy.parameters()):
                pe.lerp_(pp, 0.001)
        sync(dev)
        times["update"] = time.perf_counter() - t0
        return times

    torch.manual_seed(0)
    step()  # warm-up
    runs = [step() for _ in range(a.steps)]
    print(json.dumps({k: statistics.median(r[k] for r in runs) for k in runs[0]} | {"threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()

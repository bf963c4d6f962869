"""Adam against SGD on the thought bandit's pretrained model, outside the trainer.

Ten steps that only *raise* log π(`1` | `+ = <think>`) (a purely positive policy-gradient signal)
with Adam and with SGD, then π of the helpful thought `1`, the unhelpful `2`, and the tokens that
were never rewarded (`</think>`, `.`). docs/rl-diagnosis.md §3 quotes its output: Adam raises
π(`</think>`) twelvefold, SGD lowers it.

    cargo test --release --test bandit the_pretrained   # builds the bandit world
    .venv/bin/python scripts/optimizer_probe.py target/tmp/bandit/bandit/pretrain/checkpoints/step-00000600/model
"""
import sys

import torch
import transformers
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM

transformers.logging.set_verbosity_error()
model_dir = sys.argv[1]
tok = Tokenizer.from_file(model_dir + "/tokenizer.json")
prompt = torch.tensor([tok.encode("+ = <think>").ids])
ids = {w: tok.encode(w).ids[0] for w in ["1", "2", "</think>", "."]}

for name, make in [("Adam, lr 2e-4", lambda p: torch.optim.Adam(p, lr=2e-4)), ("SGD, lr 1e-2", lambda p: torch.optim.SGD(p, lr=1e-2))]:
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    opt = make(model.parameters())
    with torch.no_grad():
        before = torch.log_softmax(model(prompt).logits[0, -1], -1).exp()
    for _ in range(10):
        loss = -torch.log_softmax(model(prompt).logits[0, -1], -1)[ids["1"]]
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = torch.log_softmax(model(prompt).logits[0, -1], -1).exp()
    print(f"{name}: " + ", ".join(f"π({w}) {before[i]:.4f} -> {after[i]:.4f}" for w, i in ids.items()))

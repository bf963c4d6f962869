"""Random-weight Hugging Face checkpoints made with transformers, and transformers' outputs on them.

The Rust tests compare against these numbers; transformers is the independent reference.

  make OUT            one tiny checkpoint per test case in OUT/<case>/, plus
                      OUT/<case>/reference.safetensors (logits, greedy continuation, token ids)
  single OUT [--arch qwen3] [--hidden 64] [--layers 2] [--heads 4] [--kv-heads 2]
             [--intermediate 96] [--vocab 0] [--dtype float32] [--seed 0]
                      one checkpoint of the given shape (vocab 0 = the tokenizer's size)
  verify-saved OUT    for every OUT/<case>/saved/ (written by Rust), load it in transformers and
                      write OUT/<case>/saved_reference.safetensors (logits and token ids)
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "47 + 38 = 85. Twelve times twelve is 144.",
    "Reinforcement pretraining rewards a thought by the log-likelihood gain of the next token.",
    "def add(a, b):\n    return a + b\n",
    "Paris is the capital of France; Berlin is the capital of Germany.",
    "One kilometre is 1000 metres, and one metre is 100 centimetres.",
] * 4

# Text whose tokenization Rust must reproduce, including the thought delimiters added later.
PROBE_TEXT = "<think>47 + 38</think> = 85. The fox."

# name: (architecture, stored dtype, tied embeddings)
CASES = {
    "qwen3-f32-tied": ("qwen3", torch.float32, True),
    "qwen3-bf16-untied": ("qwen3", torch.bfloat16, False),
    "qwen2-f32-untied": ("qwen2", torch.float32, False),
    "qwen2-bf16-tied": ("qwen2", torch.bfloat16, True),
    "llama-f32-untied": ("llama", torch.float32, False),
    "llama-bf16-tied": ("llama", torch.bfloat16, True),
    "gpt2-f32-tied": ("gpt2", torch.float32, True),
    "gpt2-bf16-untied": ("gpt2", torch.bfloat16, False),
}


def make_tokenizer(with_bos):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<|endoftext|>", "<s>"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    if with_bos:  # Llama-style: the post-processor prepends BOS
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<s>")


def make_model(arch, vocab, tied, hidden=64, layers=2, heads=4, kv_heads=2, intermediate=96, head_dim=None,
               max_positions=256):
    common = dict(vocab_size=vocab, tie_word_embeddings=tied, eos_token_id=0)
    shape = dict(hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                 num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=max_positions)
    if arch == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(head_dim=head_dim or hidden // heads, **shape, **common))
    if arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**shape, **common))
    if arch == "llama":
        # original_max_position_embeddings small, so llama3 scaling changes frequencies that matter here
        rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 16}
        return LlamaForCausalLM(LlamaConfig(rope_scaling=rope, **shape, **common))
    if arch == "gpt2":
        cfg = GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_inner=intermediate, n_positions=128,
                         bos_token_id=0, **common)
        return GPT2LMHeadModel(cfg)
    raise ValueError(arch)


# Per-architecture test shapes: Qwen3 with head_dim != hidden/heads, Llama with one KV head (GQA 4:1),
# GPT-2 with the usual 4x MLP.
TEST_SHAPES = {
    "qwen3": dict(head_dim=24),
    "qwen2": dict(),
    "llama": dict(kv_heads=1),
    "gpt2": dict(intermediate=256),
}


def randomize(model, seed):
    """Weights large enough that logits are far from uniform (the default init gives near-ties),
    and norm scales away from 1 so that a norm applied wrongly shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ln_" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def greedy(model, ids, n):
    """Greedy continuation by full recomputation (no cache): an independent path."""
    seq = ids
    for _ in range(n):
        nxt = model(seq).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    return seq[0, ids.shape[1]:]


def make(out):
    for case_index, (case, (arch, dtype, tied)) in enumerate(CASES.items()):
        d = os.path.join(out, case)
        tok = make_tokenizer(with_bos=arch == "llama")
        # GPT-2 gets spare embedding rows (as Qwen checkpoints have); the others grow when tokens are added.
        vocab = len(tok) + (8 if arch == "gpt2" else 0)
        torch.manual_seed(case_index)
        model = make_model(arch, vocab, tied, **TEST_SHAPES[arch])
        randomize(model, case_index)
        model.to(dtype).save_pretrained(d)
        tok.save_pretrained(d)
        if case == "qwen3-f32-tied":  # the same weights as a sharded checkpoint with an index
            model.save_pretrained(d + "-sharded", max_shard_size="40KB")
            tok.save_pretrained(d + "-sharded")
        # Reference from the saved files, computed in float32.
        ref = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        g = torch.Generator().manual_seed(100 + case_index)
        ids_a = torch.randint(0, len(tok), (1, 24), generator=g)
        ids_b = torch.randint(0, len(tok), (1, 17), generator=g)
        with torch.no_grad():
            tensors = {
                "ids_a": ids_a[0], "ids_b": ids_b[0],
                "logits_a": ref(ids_a).logits[0].contiguous(),
                "logits_b": ref(ids_b).logits[0].contiguous(),
                "greedy_a": greedy(ref, ids_a, 32),
                "probe_ids": torch.tensor(tok(PROBE_TEXT)["input_ids"]),
            }
        save_file(tensors, os.path.join(d, "reference.safetensors"))


def verify_saved(out):
    for case in CASES:
        d = os.path.join(out, case, "saved")
        if not os.path.isdir(d):
            continue
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(d)
        ids = load_file(os.path.join(d, "..", "saved_input.safetensors"))["ids"]
        with torch.no_grad():
            logits = model(ids.unsqueeze(0)).logits[0].contiguous()
        save_file({"logits": logits, "probe_ids": torch.tensor(tok(PROBE_TEXT)["input_ids"]),
                   "vocab_size": torch.tensor([model.config.vocab_size])},
                  os.path.join(out, case, "saved_reference.safetensors"))


def single(out, argv):
    p = argparse.ArgumentParser(prog="tiny_models.py single")
    p.add_argument("--arch", default="qwen3", choices=["qwen3", "qwen2", "llama", "gpt2"])
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--intermediate", type=int, default=96)
    p.add_argument("--vocab", type=int, default=0)
    p.add_argument("--max-positions", type=int, default=2048)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    tok = make_tokenizer(with_bos=a.arch == "llama")
    torch.manual_seed(a.seed)
    model = make_model(a.arch, a.vocab or len(tok), tied=True, hidden=a.hidden, layers=a.layers, heads=a.heads,
                       kv_heads=a.kv_heads, intermediate=a.intermediate, max_positions=a.max_positions)
    randomize(model, a.seed)
    model.to(getattr(torch, a.dtype)).save_pretrained(out)
    tok.save_pretrained(out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd, out = sys.argv[1], sys.argv[2]
    if cmd == "single":
        single(out, sys.argv[3:])
    else:
        {"make": make, "verify-saved": verify_saved}[cmd](out)
    print(json.dumps({"ok": True, "out": out}))

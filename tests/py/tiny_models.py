"""Tiny random-weight Hugging Face checkpoints and transformers' outputs on them.

The Rust tests compare against these numbers; transformers is the independent reference.

  make OUT            one checkpoint per case in OUT/<case>/ plus OUT/<case>/reference.safetensors
  verify-saved OUT    for every OUT/<case>/saved/ (written by Rust), load it in transformers and
                      write OUT/<case>/saved_reference.safetensors (logits and token ids)
"""
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


def make_model(arch, vocab, tied):
    common = dict(vocab_size=vocab, tie_word_embeddings=tied, eos_token_id=0)
    if arch == "qwen3":
        cfg = Qwen3Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, head_dim=24, max_position_embeddings=256, **common)
        return Qwen3ForCausalLM(cfg)
    if arch == "qwen2":
        cfg = Qwen2Config(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=256, **common)
        return Qwen2ForCausalLM(cfg)
    if arch == "llama":
        # original_max_position_embeddings small, so llama3 scaling changes frequencies that matter here
        cfg = LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=1, max_position_embeddings=256,
                          rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                        "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                          **common)
        return LlamaForCausalLM(cfg)
    if arch == "gpt2":
        cfg = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, bos_token_id=0, **common)
        return GPT2LMHeadModel(cfg)
    raise ValueError(arch)


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
        model = make_model(arch, vocab, tied)
        randomize(model, case_index)
        model.to(dtype).save_pretrained(d)
        tok.save_pretrained(d)
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


if __name__ == "__main__":
    torch.set_num_threads(1)
    cmd, out = sys.argv[1], sys.argv[2]
    {"make": make, "verify-saved": verify_saved}[cmd](out)
    print(json.dumps({"ok": True, "cases": list(CASES)}))

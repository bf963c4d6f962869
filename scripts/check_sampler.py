"""Does `rlp generate` sample from softmax(logits / T) in the real decode loop?

Runs `rlp generate` on one prompt repeated N times (KV-cached decode, row-keyed Gumbel noise,
batches of --batch-size rows), then recomputes the sampling distribution of the first and the
second new token independently with `transformers` (a plain full forward, no cache) and compares:
Pearson's chi-square of the first token's counts against N * softmax(logits / T), and of the second
token's counts given the most frequent first token. Prints one JSON line per check.

    .venv/bin/python scripts/check_sampler.py --rlp target/release/rlp --model DIR \
        --prompt "3 + 4 + 2 = <think>" --rows 20000 --temperature 0.7
"""
import argparse
import json
import math
import subprocess
import tempfile
from collections import Counter

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def chi_square(counts, probs, n):
    """Pearson's chi-square over tokens with expected count >= 5 (the rest pooled)."""
    chi2, df, rare_seen, rare_expected = 0.0, 0, 0.0, 0.0
    for tok, q in enumerate(probs):
        e, c = q * n, counts.get(tok, 0)
        if e >= 5:
            chi2 += (c - e) ** 2 / e
            df += 1
        else:
            rare_seen += c
            rare_expected += e
    if rare_expected >= 5:
        chi2 += (rare_seen - rare_expected) ** 2 / rare_expected
        df += 1
    df -= 1  # the counts sum to n
    return chi2, df


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rlp", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    tok = AutoTokenizer.from_pretrained(a.model)
    ids = tok(a.prompt, add_special_tokens=False)["input_ids"]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        for _ in range(a.rows):
            f.write(json.dumps({"input_ids": ids}) + "\n")
        prompts = f.name
    out = subprocess.run(
        [a.rlp, "generate", "--model", a.model, prompts, "--max-new-tokens", "2", "--temperature", str(a.temperature),
         "--top-p", "1", "--top-k", "0", "--seed", str(a.seed), "--batch-size", str(a.batch_size)],
        check=True, capture_output=True, text=True,
    ).stdout
    gens = [json.loads(line)["output_ids"] for line in out.splitlines()]

    model = AutoModelForCausalLM.from_pretrained(a.model, torch_dtype=torch.float32).eval()

    def dist(prefix):
        with torch.no_grad():
            logits = model(torch.tensor([prefix])).logits[0, -1].double()
        return torch.softmax(logits / a.temperature, -1).tolist()

    first = Counter(g[0] for g in gens)
    probs = dist(ids)
    chi2, df = chi_square(first, probs, len(gens))
    top = first.most_common(1)[0][0]
    report = [{"check": "first token", "draws": len(gens), "chi2": round(chi2, 1), "df": df,
               "bound_mean_plus_6sd": round(df + 6 * math.sqrt(2 * max(df, 1)), 1),
               "top_token": tok.decode([top]), "freq": first[top] / len(gens), "prob": probs[top]}]
    second = Counter(g[1] for g in gens if len(g) > 1 and g[0] == top)
    n2 = sum(second.values())
    probs2 = dist(ids + [top])
    chi2, df = chi_square(second, probs2, n2)
    top2 = second.most_common(1)[0][0]
    report.append({"check": f"second token after {tok.decode([top])!r}", "draws": n2, "chi2": round(chi2, 1), "df": df,
                   "bound_mean_plus_6sd": round(df + 6 * math.sqrt(2 * max(df, 1)), 1),
                   "top_token": tok.decode([top2]), "freq": second[top2] / n2, "prob": probs2[top2]})
    for r in report:
        print(json.dumps(r))


if __name__ == "__main__":
    main()

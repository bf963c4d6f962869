//! One sampling step: logits → token ids and their log-probs.
use tch::{Kind, Tensor};

#[derive(Debug, Clone)]
pub struct SamplingParams {
    /// 0 = greedy (argmax).
    pub temperature: f64,
    /// Keep only the k most likely tokens; 0 = off.
    pub top_k: i64,
    /// Keep the smallest set of tokens whose probability reaches `top_p`; 1.0 = off.
    pub top_p: f64,
    pub max_new_tokens: usize,
    /// A row finishes after emitting any of these (the stop token is part of its output).
    pub stop_ids: Vec<i64>,
    /// Seeds libtorch's generator at the start of [`crate::generate`].
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, max_new_tokens: 32, stop_ids: Vec::new(), seed: 0 }
    }
}

impl SamplingParams {
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.temperature >= 0.0 && self.temperature.is_finite(), "temperature must be >= 0, got {}", self.temperature);
        anyhow::ensure!(self.top_p > 0.0 && self.top_p <= 1.0, "top_p must be in (0, 1], got {}", self.top_p);
        anyhow::ensure!(self.top_k >= 0, "top_k must be >= 0, got {}", self.top_k);
        Ok(())
    }
}

/// `logits`: `[B, V]`. Returns `(tokens [B] int64, logprobs [B] float32)`.
///
/// The log-prob is that of the sampling distribution the policy defines, `log_softmax(logits / T)`,
/// before top-k / top-p truncation (which are search heuristics, not part of the policy); for
/// greedy decoding it is the model's own `log_softmax(logits)`.
/// Fails (instead of sampling garbage) when a distribution is not finite, e.g. NaN weights.
pub fn sample(logits: &Tensor, p: &SamplingParams) -> anyhow::Result<(Tensor, Tensor)> {
    let logits = logits.to_kind(Kind::Float);
    let finite = logits.isfinite().all().int64_value(&[]) != 0;
    anyhow::ensure!(finite, "the model's next-token logits are not finite (NaN or inf weights?)");
    if p.temperature == 0.0 {
        let tokens = logits.argmax(-1, false);
        let logprobs = logits.log_softmax(-1, Kind::Float).gather(-1, &tokens.unsqueeze(-1), false).squeeze_dim(-1);
        return Ok((tokens, logprobs));
    }
    let scaled = logits / p.temperature;
    let logp = scaled.log_softmax(-1, Kind::Float);
    let mut filtered = scaled;
    let vocab = filtered.size()[1];
    if p.top_k > 0 && p.top_k < vocab {
        let (top, _) = filtered.topk(p.top_k, -1, true, true);
        let kth = top.narrow(1, p.top_k - 1, 1);
        filtered = filtered.masked_fill(&filtered.lt_tensor(&kth), f64::NEG_INFINITY);
    }
    if p.top_p < 1.0 {
        let (sorted, order) = filtered.sort(-1, true);
        let probs = sorted.softmax(-1, Kind::Float);
        // Drop a token when the tokens ranked above it already reach top_p; the first is always kept.
        let before = probs.cumsum(-1, Kind::Float) - &probs;
        let drop_sorted = before.gt(p.top_p);
        let drop = drop_sorted.zeros_like().scatter(-1, &order, &drop_sorted);
        filtered = filtered.masked_fill(&drop, f64::NEG_INFINITY);
    }
    let tokens = filtered.softmax(-1, Kind::Float).f_multinomial(1, true)?.squeeze_dim(-1);
    let logprobs = logp.gather(-1, &tokens.unsqueeze(-1), false).squeeze_dim(-1);
    Ok((tokens, logprobs))
}

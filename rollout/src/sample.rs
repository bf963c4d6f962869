//! One sampling step: logits → token ids and their log-probs.
//!
//! Sampling is Gumbel-max with counter-based noise: the noise for token `v` of row `r` at decode
//! step `t` is a hash of (the row's key, `t`, `v`), where row `r`'s key derives from
//! `(seed, first_row + r)`. A row's draws therefore do not depend on which other rows share its
//! batch: the same thoughts come out whether a context is sampled alone, in a micro-batch, or on
//! rank 3 of 8 — the property that makes a 2-rank run equal a 1-rank run of twice the batch,
//! and a resumed run replay exactly. (libtorch's generator draws one stream for the whole batch.)
use tch::{Device, Kind, Tensor};

use crate::seed::derive_seed;

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
    /// The stream every row's key derives from.
    pub seed: u64,
    /// Global index of the batch's first row: row `r` draws from stream `(seed, first_row + r)`.
    pub first_row: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, max_new_tokens: 32, stop_ids: Vec::new(), seed: 0, first_row: 0 }
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

/// Per-row sampling keys, `[rows, 1]` int64 in `[0, 2^32)`, on `device`.
pub fn row_keys(p: &SamplingParams, rows: usize, device: Device) -> Tensor {
    let keys: Vec<i64> = (0..rows as u64).map(|r| (derive_seed(&[p.seed, p.first_row + r]) & MASK32) as i64).collect();
    Tensor::from_slice(&keys).view([rows as i64, 1]).to_device(device)
}

const MASK32: u64 = 0xFFFF_FFFF;

/// A 32-bit integer hash (xorshift-multiply rounds), in int64 tensor ops; the multipliers are
/// below 2^31 so no product of 32-bit values overflows int64.
fn mix32(x: &Tensor) -> Tensor {
    let x = x.bitwise_xor_tensor(&x.bitwise_right_shift_tensor_scalar(16));
    let x = (x * 0x7feb_352d_i64).bitwise_and(MASK32 as i64);
    let x = x.bitwise_xor_tensor(&x.bitwise_right_shift_tensor_scalar(15));
    let x = (x * 0x2c1b_3c6d_i64).bitwise_and(MASK32 as i64);
    x.bitwise_xor_tensor(&x.bitwise_right_shift_tensor_scalar(16))
}

/// `[rows, vocab]` uniforms in (0, 1) for decode step `step`, a pure function of the row keys,
/// the step and the token id.
pub fn uniform_noise(keys: &Tensor, step: usize, vocab: i64) -> Tensor {
    let step_key = (derive_seed(&[step as u64]) & MASK32) as i64;
    let token = mix32(&Tensor::arange(vocab, (Kind::Int64, keys.device())).bitwise_xor(step_key)).unsqueeze(0);
    // 23 bits, so that (bits + 0.5) / 2^23 is exact in float32 and never rounds to 0 or 1 (a
    // uniform of exactly 1 would make that token's Gumbel noise infinite).
    let bits = mix32(&token.bitwise_xor_tensor(keys)).bitwise_right_shift_tensor_scalar(9);
    (bits.to_kind(Kind::Float) + 0.5) / (1u64 << 23) as f64
}

/// `logits`: `[B, V]`; `keys`: [`row_keys`] of the batch; `step`: the decode step. Returns `(tokens [B] int64, logprobs [B] float32)`.
///
/// The log-prob is that of the sampling distribution the policy defines, `log_softmax(logits / T)`,
/// before top-k / top-p truncation (which are search heuristics, not part of the policy); for
/// greedy decoding it is the model's own `log_softmax(logits)`.
/// Also returns whether every logit was finite, as a device scalar, so that the decode loop
/// can check it with its periodic host read instead of a blocking read per token (garbage
/// tokens drawn from NaN logits are discarded with the error).
pub fn sample(logits: &Tensor, p: &SamplingParams, keys: &Tensor, step: usize) -> (Tensor, Tensor, Tensor) {
    let logits = logits.to_kind(Kind::Float);
    let finite = logits.isfinite().all();
    if p.temperature == 0.0 {
        let tokens = logits.argmax(-1, false);
        let logprobs = logits.log_softmax(-1, Kind::Float).gather(-1, &tokens.unsqueeze(-1), false).squeeze_dim(-1);
        return (tokens, logprobs, finite);
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
    // Gumbel-max: argmax(log-weights + Gumbel noise) is a draw from softmax(log-weights).
    let gumbel = -(-uniform_noise(keys, step, vocab).log()).log();
    let tokens = (filtered + gumbel).argmax(-1, false);
    let logprobs = logp.gather(-1, &tokens.unsqueeze(-1), false).squeeze_dim(-1);
    (tokens, logprobs, finite)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(seed: u64, first_row: u64) -> SamplingParams {
        SamplingParams { seed, first_row, ..Default::default() }
    }

    #[test]
    fn a_rows_draw_does_not_depend_on_its_batch() {
        let logits = Tensor::randn([6, 50], (Kind::Float, Device::Cpu));
        let all = params(3, 10);
        let (batch, _, _) = sample(&logits, &all, &row_keys(&all, 6, Device::Cpu), 4);
        // Rows 2..5 of that batch, sampled as a batch of their own starting at global row 12.
        let part = params(3, 12);
        let (alone, _, _) = sample(&logits.narrow(0, 2, 3), &part, &row_keys(&part, 3, Device::Cpu), 4);
        assert_eq!(Vec::<i64>::try_from(batch.narrow(0, 2, 3)).unwrap(), Vec::<i64>::try_from(alone).unwrap());
        // Another step, seed or row gives other draws.
        let (next, _, _) = sample(&logits, &all, &row_keys(&all, 6, Device::Cpu), 5);
        let (other, _, _) = sample(&logits, &params(4, 10), &row_keys(&params(4, 10), 6, Device::Cpu), 4);
        assert_ne!(Vec::<i64>::try_from(&batch).unwrap(), Vec::<i64>::try_from(next).unwrap());
        assert_ne!(Vec::<i64>::try_from(&batch).unwrap(), Vec::<i64>::try_from(other).unwrap());
    }

    #[test]
    fn frequencies_follow_the_tempered_softmax() {
        // 20k rows of the same 4-way distribution at temperature 0.5; each frequency within
        // 4 standard errors of its probability.
        let rows = 20_000i64;
        let base = Tensor::from_slice(&[0.0f32, 0.5, 1.0, -1.0]);
        let logits = base.unsqueeze(0).repeat([rows, 1]);
        let p = SamplingParams { temperature: 0.5, ..params(11, 0) };
        let mut counts = [0f64; 4];
        for step in 0..2 {
            let (tokens, _, _) = sample(&logits, &p, &row_keys(&p, rows as usize, Device::Cpu), step);
            for t in Vec::<i64>::try_from(tokens).unwrap() {
                counts[t as usize] += 1.0;
            }
        }
        let n = 2.0 * rows as f64;
        let probs = Vec::<f32>::try_from((base / 0.5).softmax(-1, Kind::Float)).unwrap();
        for (c, &q) in counts.iter().zip(&probs) {
            let se = (q as f64 * (1.0 - q as f64) / n).sqrt();
            assert!((c / n - q as f64).abs() < 4.0 * se, "frequency {} vs probability {q}", c / n);
        }
    }

    #[test]
    fn a_peaked_300_token_distribution_passes_a_chi_square_test() {
        // 200k draws (10 steps × 20k rows) from softmax of Gaussian logits with std 3 (a few
        // dominant tokens, a long tail), Pearson's χ² over tokens with expected count ≥ 5.
        tch::manual_seed(5);
        let vocab = 300i64;
        let rows = 20_000usize;
        let base = Tensor::randn([vocab], (Kind::Float, Device::Cpu)) * 3.0;
        let logits = base.unsqueeze(0).repeat([rows as i64, 1]);
        let p = params(99, 7);
        let mut counts = vec![0f64; vocab as usize];
        for step in 0..10 {
            let (tokens, _, _) = sample(&logits, &p, &row_keys(&p, rows, Device::Cpu), step);
            for t in Vec::<i64>::try_from(tokens).unwrap() {
                counts[t as usize] += 1.0;
            }
        }
        let n = 10.0 * rows as f64;
        let probs = Vec::<f64>::try_from(base.softmax(-1, Kind::Double)).unwrap();
        let (mut chi2, mut df, mut rare_seen, mut rare_expected) = (0.0, 0usize, 0.0, 0.0);
        for (c, q) in counts.iter().zip(&probs) {
            let e = q * n;
            if e >= 5.0 {
                chi2 += (c - e) * (c - e) / e;
                df += 1;
            } else {
                rare_seen += c;
                rare_expected += e;
            }
        }
        // χ² with df degrees of freedom: mean df, std √(2 df); 6 std is a generous bound.
        let bound = df as f64 + 6.0 * (2.0 * df as f64).sqrt();
        assert!(chi2 < bound, "χ² = {chi2:.1} over {df} tokens (bound {bound:.1})");
        assert!((rare_seen - rare_expected).abs() < 6.0 * rare_expected.sqrt().max(1.0), "tail: {rare_seen} seen, {rare_expected:.1} expected");
    }

    #[test]
    fn top_k_is_respected() {
        let logits = Tensor::from_slice(&[5.0f32, 4.0, 0.0, -1.0]).unsqueeze(0).repeat([2000, 1]);
        let p = SamplingParams { top_k: 2, ..params(1, 0) };
        let (tokens, _, _) = sample(&logits, &p, &row_keys(&p, 2000, Device::Cpu), 0);
        assert!(Vec::<i64>::try_from(tokens).unwrap().iter().all(|&t| t < 2));
    }
}

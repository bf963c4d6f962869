//! The attention mask shared by every architecture, and the call into libtorch's SDPA.
//!
//! Slots, not positions: a batch row's keys live in slots `0..S` of the KV cache (left padding
//! occupies the first slots of shorter rows). A query in slot `past + i` may see key slot `j` when
//! `j <= past + i` and slot `j` holds a real token. A query always sees itself, so padded query
//! rows never have an all-masked softmax (which gives NaN, and NaN times a zero weight would leak
//! into real rows through the cached values of padding slots).
use tch::{Device, Kind, Tensor};

/// How queries of one forward pass may attend. Built once per forward and shared by all layers.
pub struct AttnMask {
    /// `[B, 1, T, S]` boolean, true = may attend. `None` when `is_causal` or no masking is needed.
    pub mask: Option<Tensor>,
    /// Use SDPA's built-in causal mask (only valid when there is no cache prefix).
    pub is_causal: bool,
}

impl AttnMask {
    /// `key_valid`: `[B, S]` (bool or int, nonzero = real token) over all slots, cached ones
    /// first, or `None` when no row has padding. `past`: slots already in the cache; `t`: new slots.
    pub fn new(key_valid: Option<&Tensor>, past: i64, t: i64, device: Device) -> AttnMask {
        match key_valid {
            None if t == 1 => AttnMask { mask: None, is_causal: false },
            None if past == 0 => AttnMask { mask: None, is_causal: true },
            _ => {
                let s = past + t;
                let q_slot = Tensor::arange_start(past, s, (Kind::Int64, device)).view([t, 1]);
                let k_slot = Tensor::arange(s, (Kind::Int64, device)).view([1, s]);
                let causal = k_slot.le_tensor(&q_slot); // [T, S]
                let mask = match key_valid {
                    None => causal.view([1, 1, t, s]),
                    Some(valid) => {
                        let valid = valid.to_device(device).to_kind(Kind::Bool);
                        let b = valid.size()[0];
                        let diag = k_slot.eq_tensor(&q_slot); // [T, S]
                        valid.view([b, 1, 1, s]).logical_and(&causal).logical_or(&diag)
                    }
                };
                AttnMask { mask: Some(mask), is_causal: false }
            }
        }
    }
}

/// `q`: `[B, H, T, D]`, `k`/`v`: `[B, Hkv, S, D]` with `H` a multiple of `Hkv` (grouped-query).
pub fn sdpa(q: &Tensor, k: &Tensor, v: &Tensor, mask: &AttnMask, scale: f64) -> Tensor {
    let gqa = q.size()[1] != k.size()[1];
    Tensor::scaled_dot_product_attention(q, k, v, mask.mask.as_ref(), 0.0, mask.is_causal, scale, gqa)
}

/// Position ids for left- or right-padded rows: the count of real tokens before each slot.
/// `valid`: `[B, S]` (nonzero = real token). Padding slots get position 0.
pub fn positions_from_mask(valid: &Tensor) -> Tensor {
    let valid = valid.to_kind(Kind::Int64);
    (valid.cumsum(-1, Kind::Int64) - 1).clamp_min(0) * &valid
}

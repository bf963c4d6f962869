//! Learning rate at an optimizer step: linear warm-up, then constant or cosine decay.
use std::f64::consts::PI;

use crate::config::{OptimSection, Schedule};

/// `step` counts optimizer steps from 0.
pub fn lr_at(cfg: &OptimSection, step: usize, max_steps: usize) -> f64 {
    if step < cfg.warmup_steps {
        return cfg.lr * (step + 1) as f64 / cfg.warmup_steps as f64;
    }
    match cfg.schedule {
        Schedule::Constant => cfg.lr,
        Schedule::Cosine => {
            let span = max_steps.saturating_sub(cfg.warmup_steps).max(1) as f64;
            let progress = ((step - cfg.warmup_steps) as f64 / span).min(1.0);
            let min = cfg.min_lr_ratio;
            cfg.lr * (min + (1.0 - min) * 0.5 * (1.0 + (PI * progress).cos()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let cfg = OptimSection { lr: 1.0, warmup_steps: 4, schedule: Schedule::Cosine, min_lr_ratio: 0.1, ..Default::default() };
        assert_eq!(lr_at(&cfg, 0, 14), 0.25);
        assert_eq!(lr_at(&cfg, 3, 14), 1.0);
        assert!((lr_at(&cfg, 4, 14) - 1.0).abs() < 1e-12);
        assert!((lr_at(&cfg, 9, 14) - 0.55).abs() < 1e-12); // halfway: 0.1 + 0.9 * 0.5
        assert!((lr_at(&cfg, 14, 14) - 0.1).abs() < 1e-12);
        let constant = OptimSection { lr: 0.5, ..Default::default() };
        assert_eq!(lr_at(&constant, 1000, 10), 0.5);
    }
}

//! Exact match between an extracted answer and a reference, and pass@1 over k samples.
//!
//! Both sides are normalised the same way: when both read as a single number they are compared
//! as decimals (`1,234` == `1234.0`, `-0` == `0`, `$18` == `18`), exactly, without going through
//! floating point (so `0.1` and `0.10000000000000001` differ, and 17-digit integers do not
//! collide); otherwise as text, trimmed, with runs of whitespace collapsed to one space.
use crate::extract::scan_numbers;

/// The canonical decimal form of `s` when the whole of `s` is one number, else `None`.
///
/// Allowed around the number: whitespace, a sign, `$` (or LaTeX `\$`), a trailing `%` (`\%`) and
/// a sentence-ending period. LaTeX thin spaces (`10,\!000`) and braced commas (`10{,}000`) count
/// as thousands separators, as MATH writes them. Canonical: no `+`, no leading zeros, no
/// trailing fractional zeros, no decimal point for an integer, no sign on zero.
pub fn canonical_number(s: &str) -> Option<String> {
    let cleaned = s.replace("\\$", "$").replace("\\%", "%").replace("\\!", "").replace("{,}", ",");
    let mut t = cleaned.trim();
    while let Some(rest) = t.strip_suffix('%').or_else(|| t.strip_suffix('.')) {
        t = rest.trim_end();
    }
    let matches = scan_numbers(t);
    let [m] = matches.as_slice() else { return None };
    if m.start != 0 || m.end != t.chars().count() {
        return None;
    }
    Some(canonical_decimal(&m.value))
}

/// `[-]digits[.digits]` → canonical form (see [`canonical_number`]).
fn canonical_decimal(value: &str) -> String {
    let (negative, unsigned) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let int = int.trim_start_matches('0');
    let frac = frac.trim_end_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let mut out = String::new();
    if negative && !(int == "0" && frac.is_empty()) {
        out.push('-');
    }
    out.push_str(int);
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    out
}

/// Trimmed, inner whitespace runs collapsed to one space.
pub fn normalize_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Whether an extracted answer equals the reference (numerically when both are numbers, else as
/// normalised text).
pub fn answers_match(extracted: &str, reference: &str) -> bool {
    match (canonical_number(extracted), canonical_number(reference)) {
        (Some(a), Some(b)) => a == b,
        _ => normalize_text(extracted) == normalize_text(reference),
    }
}

/// pass@1 of one problem from its k samples: the fraction that are correct (0 for no samples).
pub fn pass_at_1(correct: &[bool]) -> f64 {
    if correct.is_empty() {
        return 0.0;
    }
    correct.iter().filter(|&&c| c).count() as f64 / correct.len() as f64
}

/// Arithmetic mean (0 for an empty slice): the reported pass@1 is the mean of the per-problem
/// values, so every problem weighs the same whatever k is.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::{extract, Extraction};
    use crate::problems::reference_answer;

    fn canon(s: &str) -> Option<String> {
        canonical_number(s)
    }

    #[test]
    fn numbers_are_canonical_decimals() {
        assert_eq!(canon("1234").as_deref(), Some("1234"));
        assert_eq!(canon("1,234").as_deref(), Some("1234"));
        assert_eq!(canon("1234.0").as_deref(), Some("1234"));
        assert_eq!(canon(" +1,234.500 ").as_deref(), Some("1234.5"));
        assert_eq!(canon("-0").as_deref(), Some("0"));
        assert_eq!(canon("-0.000").as_deref(), Some("0"));
        assert_eq!(canon("007").as_deref(), Some("7"));
        assert_eq!(canon(".5").as_deref(), Some("0.5"));
        assert_eq!(canon("-3").as_deref(), Some("-3"));
        assert_eq!(canon("$18").as_deref(), Some("18"));
        assert_eq!(canon("\\$18.90").as_deref(), Some("18.9"));
        assert_eq!(canon("42.").as_deref(), Some("42"));
        assert_eq!(canon("25%").as_deref(), Some("25"));
        assert_eq!(canon("25\\%").as_deref(), Some("25"));
        assert_eq!(canon("10,\\!000").as_deref(), Some("10000"));
        assert_eq!(canon("10{,}000").as_deref(), Some("10000"));
    }

    #[test]
    fn not_a_single_number_is_none() {
        for s in ["", "  ", "abc", "3 4", "3,4", "1/2", "\\frac{1}{2}", "x=3", "3 apples", "5-3", "1.2.3", "."] {
            assert_eq!(canon(s), None, "`{s}`");
        }
    }

    #[test]
    fn numeric_match() {
        assert!(answers_match("1,234", "1234"));
        assert!(answers_match("1234", "1,234.0"));
        assert!(answers_match("-0", "0"));
        assert!(answers_match("2.50", "2.5"));
        assert!(answers_match(" 42 ", "42."));
        assert!(answers_match("+3", "3"));
        assert!(!answers_match("-3", "3"));
        assert!(!answers_match("42", "42.01"));
        assert!(!answers_match("12", "1,2"));
        // Exact decimals: a value just past f64 precision is still different.
        assert!(!answers_match("9007199254740993", "9007199254740992"));
    }

    #[test]
    fn text_match_collapses_whitespace() {
        assert!(answers_match("\\frac{1}{2}", "\\frac{1}{2}"));
        assert!(answers_match("  \\frac{1}{2} ", "\\frac{1}{2}"));
        assert!(answers_match("x  +\n 1", "x + 1"));
        assert!(!answers_match("x+1", "x + 1"));
        assert!(!answers_match("\\frac{1}{2}", "0.5"));
        assert!(!answers_match("", "0"));
    }

    #[test]
    fn gsm8k_references_end_to_end() {
        let reference = reference_answer("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 1,072");
        assert_eq!(reference, "1,072");
        let extracted = extract("She sold 1072 clips.\n", Extraction::LastNumber).unwrap();
        assert!(answers_match(&extracted, &reference));
        let boxed = extract("so \\boxed{1,072}", Extraction::Boxed).unwrap();
        assert!(answers_match(&boxed, &reference));
    }

    #[test]
    fn pass_at_1_averages_samples_then_problems() {
        assert_eq!(pass_at_1(&[true, false, true, true]), 0.75);
        assert_eq!(pass_at_1(&[false, false]), 0.0);
        assert_eq!(pass_at_1(&[true]), 1.0);
        assert_eq!(pass_at_1(&[]), 0.0);
        // Problem A: 1 of 4 right; problem B: 4 of 4. Mean of per-problem values, not of samples
        // pooled (which would be the same here) nor of "any correct".
        let per_problem = [pass_at_1(&[true, false, false, false]), pass_at_1(&[true; 4])];
        assert_eq!(mean(&per_problem), 0.625);
        assert_eq!(mean(&[]), 0.0);
    }
}

//! Finding the answer inside a model's answer text.
//!
//! GSM8K-style answers end with a number somewhere in free text (`… so she has 1,234 apples.`);
//! MATH-style answers put the final expression in `\boxed{…}`. Both are extracted as strings;
//! [`crate::score`] decides whether two of them are equal.
use serde::{Deserialize, Serialize};

/// How the answer is taken out of the generated text (the template's `extraction`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Extraction {
    /// The last number in the text ([`last_number`]).
    #[default]
    LastNumber,
    /// The content of the last top-level `\boxed{…}`, nested braces balanced.
    Boxed,
}

impl Extraction {
    pub fn as_str(self) -> &'static str {
        match self {
            Extraction::LastNumber => "last_number",
            Extraction::Boxed => "boxed",
        }
    }
}

/// The answer in `text`, or `None` when there is none.
pub fn extract(text: &str, how: Extraction) -> Option<String> {
    match how {
        Extraction::LastNumber => last_number(text),
        // The answer text holds no thought delimiter (it starts after `</think>`), so the whole
        // text is searched: the empty delimiter means exactly that.
        Extraction::Boxed => rlp_reward::extract_answer(text, ""),
    }
}

/// `text` up to the first occurrence of any stop string (all of it when none occurs).
pub fn cut_at_stop<'a>(text: &'a str, stops: &[String]) -> &'a str {
    let end = stops.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min().unwrap_or(text.len());
    &text[..end]
}

/// The last number in `text`, written as `[-]digits[.digits]` (thousands separators and a `+`
/// sign dropped, the digits otherwise as written: `2.50` stays `2.50`).
///
/// - A sign counts only when it touches the number and does not follow a letter or digit:
///   `x=-3` and `(-3)` are −3, `5-3` and `COVID-19` end in a positive number. `−` (U+2212) is a minus.
/// - `$-3` and `-$3` are both −3; `$`, `%` and letters around a number are ignored (`42nd`, `$5`, `7%`).
/// - A comma is a thousands separator only between groups of exactly three digits after a first
///   group of one to three (`1,234,567`); otherwise it separates numbers (`3,4` ends in 4).
/// - A period is a decimal point only between digits: `42.` ending a sentence is 42, `.5` is 0.5.
pub fn last_number(text: &str) -> Option<String> {
    scan_numbers(text).pop().map(|m| m.value)
}

/// One number found by [`scan_numbers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NumberMatch {
    /// Char index where the number starts, its sign and `$` included.
    pub start: usize,
    /// Char index one past its last digit.
    pub end: usize,
    /// `[-]digits[.digits]`.
    pub value: String,
}

/// Every number in `text`, left to right (the rules of [`last_number`]).
pub(crate) fn scan_numbers(text: &str) -> Vec<NumberMatch> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match number_at(&chars, i) {
            Some(m) => {
                i = m.end;
                out.push(m);
            }
            None => i += 1,
        }
    }
    out
}

fn digit(chars: &[char], i: usize) -> bool {
    chars.get(i).is_some_and(char::is_ascii_digit)
}

fn run_of_digits(chars: &[char], from: usize) -> usize {
    (from..chars.len()).take_while(|&j| chars[j].is_ascii_digit()).count()
}

/// A number whose first digit (or leading decimal point) is at `i`, if one starts there.
fn number_at(chars: &[char], i: usize) -> Option<NumberMatch> {
    let leading_point = chars[i] == '.' && digit(chars, i + 1) && (i == 0 || !chars[i - 1].is_alphanumeric());
    if !chars[i].is_ascii_digit() && !leading_point {
        return None;
    }
    let mut int = String::new();
    let mut j = i;
    if !leading_point {
        let first = run_of_digits(chars, j);
        int.extend(&chars[j..j + first]);
        j += first;
        // Thousands groups: `,ddd` not followed by a further digit, after a short first group.
        if first <= 3 {
            while chars.get(j) == Some(&',') && run_of_digits(chars, j + 1) == 3 {
                int.extend(&chars[j + 1..j + 4]);
                j += 4;
            }
        }
    }
    let mut frac = String::new();
    if chars.get(j) == Some(&'.') && digit(chars, j + 1) {
        let n = run_of_digits(chars, j + 1);
        frac.extend(&chars[j + 1..j + 1 + n]);
        j += 1 + n;
    }
    // Look back for a `$` and a sign; either order (`-$3`, `$-3`).
    let mut start = i;
    let mut negative = false;
    let mut took_dollar = false;
    let mut took_sign = false;
    loop {
        match start.checked_sub(1).map(|k| chars[k]) {
            Some('$') if !took_dollar => {
                took_dollar = true;
                start -= 1;
            }
            Some(c @ ('-' | '+' | '\u{2212}')) if !took_sign => {
                let before = start.checked_sub(2).map(|k| chars[k]);
                if before.is_some_and(|b| b.is_alphanumeric()) {
                    break;
                }
                took_sign = true;
                negative = c != '+';
                start -= 1;
            }
            _ => break,
        }
    }
    let mut value = String::new();
    if negative {
        value.push('-');
    }
    value.push_str(if int.is_empty() { "0" } else { &int });
    if !frac.is_empty() {
        value.push('.');
        value.push_str(&frac);
    }
    Some(NumberMatch { start, end: j, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last(s: &str) -> Option<String> {
        last_number(s)
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn plain_numbers_and_spaces() {
        assert_eq!(last("42"), some("42"));
        assert_eq!(last("  The answer is   42  "), some("42"));
        assert_eq!(last("0"), some("0"));
        assert_eq!(last("007"), some("007"));
    }

    #[test]
    fn signs_touch_the_number_and_do_not_follow_a_word() {
        assert_eq!(last("it is -3"), some("-3"));
        assert_eq!(last("it is +3"), some("3"));
        assert_eq!(last("x=-3"), some("-3"));
        assert_eq!(last("(-3)"), some("-3"));
        assert_eq!(last("\u{2212}7"), some("-7"));
        assert_eq!(last("5-3"), some("3"));
        assert_eq!(last("COVID-19"), some("19"));
        assert_eq!(last("5 - 3"), some("3"));
        assert_eq!(last("-$3"), some("-3"));
        assert_eq!(last("$-3"), some("-3"));
        assert_eq!(last("--3"), some("-3"));
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(last("1,234"), some("1234"));
        assert_eq!(last("She paid $1,234,567.89."), some("1234567.89"));
        assert_eq!(last("-1,000"), some("-1000"));
        // Not separators: the numbers are listed.
        assert_eq!(last("3,4"), some("4"));
        assert_eq!(last("1,2345"), some("2345"));
        assert_eq!(last("1234,567"), some("567"));
        assert_eq!(last("12,34"), some("34"));
        assert_eq!(last("1, 234"), some("234"));
    }

    #[test]
    fn decimals_and_trailing_periods() {
        assert_eq!(last("2.50"), some("2.50"));
        assert_eq!(last("The answer is 42."), some("42"));
        assert_eq!(last("pi is 3.14."), some("3.14"));
        assert_eq!(last("about .5 of it"), some("0.5"));
        assert_eq!(last("-.5"), some("-0.5"));
        assert_eq!(last("1.2.3"), some("3"));
        assert_eq!(last("42..."), some("42"));
    }

    #[test]
    fn numbers_glued_to_words_and_symbols() {
        assert_eq!(last("$18"), some("18"));
        assert_eq!(last("costs $18 total"), some("18"));
        assert_eq!(last("7%"), some("7"));
        assert_eq!(last("the 42nd"), some("42"));
        assert_eq!(last("abc123def"), some("123"));
        assert_eq!(last("ends with 12apples"), some("12"));
        assert_eq!(last("#### 72"), some("72"));
        assert_eq!(last("x2"), some("2"));
    }

    #[test]
    fn the_last_number_wins() {
        assert_eq!(last("3 + 4 = 7"), some("7"));
        assert_eq!(last("48/2 = 24 clips, 48+24 = 72 clips. #### 72"), some("72"));
        assert_eq!(last("1 2 3 -4"), some("-4"));
        assert_eq!(last("é 5 ü 6 ß"), some("6"));
    }

    #[test]
    fn no_number_is_none() {
        assert_eq!(last(""), None);
        assert_eq!(last("no digits here."), None);
        assert_eq!(last("- + $ , ."), None);
    }

    #[test]
    fn match_spans_include_sign_and_dollar() {
        let m = scan_numbers("a -$1,234.5 b");
        assert_eq!(m, vec![NumberMatch { start: 2, end: 11, value: "-1234.5".into() }]);
        let m = scan_numbers("$5");
        assert_eq!(m, vec![NumberMatch { start: 0, end: 2, value: "5".into() }]);
    }

    #[test]
    fn boxed_takes_the_last_balanced_box() {
        let b = |s: &str| extract(s, Extraction::Boxed);
        assert_eq!(b("so \\boxed{\\frac{1}{2}}."), some("\\frac{1}{2}"));
        assert_eq!(b("\\boxed{1} then \\boxed{2}"), some("2"));
        assert_eq!(b("\\boxed{\\sqrt{\\frac{a}{b}}} and more"), some("\\sqrt{\\frac{a}{b}}"));
        assert_eq!(b("\\boxed{ 42 }"), some(" 42 "));
        assert_eq!(b("\\boxed{1} \\boxed{2"), None); // the last box is never closed
        assert_eq!(b("\\boxed{a{b}"), None);
        assert_eq!(b("no box, 42"), None);
        // A `</think>` left in the text does not hide boxes before it.
        assert_eq!(b("\\boxed{7} </think>"), some("7"));
    }

    #[test]
    fn extraction_dispatches() {
        assert_eq!(extract("\\boxed{3} then 4", Extraction::LastNumber), some("4"));
        assert_eq!(extract("\\boxed{3} then 4", Extraction::Boxed), some("3"));
    }

    #[test]
    fn stop_strings_cut_at_the_first_occurrence() {
        let stops = vec!["\n\n".to_string(), "Question:".to_string()];
        assert_eq!(cut_at_stop(" 42\n\nQuestion: next", &stops), " 42");
        assert_eq!(cut_at_stop(" 42 Question: x\n\ny", &stops), " 42 ");
        assert_eq!(cut_at_stop(" 42", &stops), " 42");
        assert_eq!(cut_at_stop(" 42", &[]), " 42");
        assert_eq!(cut_at_stop("\n\n42", &stops), "");
    }
}

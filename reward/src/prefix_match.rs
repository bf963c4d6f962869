//! RPT's verifiable next-token rewards (arXiv 2506.08007 §3.2–3.3, App. A): the model reasons,
//! then puts its prediction of the continuation in the last `\boxed{}` after `</think>`; the
//! prediction is checked against the true continuation's bytes, so it may span several tokens and
//! need not be one vocabulary item.

/// The full content of the last `\boxed{...}` after the last `close_delim` (e.g. `"</think>"`).
///
/// - Nested braces are balanced, so `\boxed{\frac{1}{2}}` gives `\frac{1}{2}`; a backslash escapes
///   the next character, so `\{` and `\}` are literal (LaTeX's own rule).
/// - Whitespace is kept: `\boxed{ size}` gives `" size"`, the token with its leading space.
/// - A `\boxed{` inside another box belongs to that box; "last" means the last top-level one.
/// - `None` when the delimiter is missing (the model never finished thinking), when there is no
///   box after it, or when the last box is never closed.
/// - An empty `close_delim` means "no delimiter": the whole response is searched.
pub fn extract_answer(response: &str, close_delim: &str) -> Option<String> {
    let start = if close_delim.is_empty() { 0 } else { response.rfind(close_delim)? + close_delim.len() };
    let tail = &response[start..];
    const OPEN: &str = "\\boxed{";
    let bytes = tail.as_bytes();
    let mut last = None;
    let mut pos = 0;
    while let Some(found) = tail[pos..].find(OPEN) {
        let content_start = pos + found + OPEN.len();
        match closing_brace(bytes, content_start) {
            Some(end) => {
                last = Some(&tail[content_start..end]);
                pos = end + 1;
            }
            // An unclosed last box is the answer, and it is malformed.
            None => return None,
        }
    }
    last.map(str::to_owned)
}

/// Index of the `}` that closes a group whose content starts at `from`.
fn closing_brace(bytes: &[u8], from: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = from;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// Cumulative byte lengths of the true continuation's tokens `x_t, x_{t+1}, …`: the "valid
/// boundaries" `L_gt` at which a prediction may end.
pub fn token_boundaries(token_bytes: &[Vec<u8>]) -> Vec<usize> {
    token_bytes
        .iter()
        .scan(0usize, |len, t| {
            *len += t.len();
            Some(*len)
        })
        .collect()
}

/// RPT's prefix-matching reward (Eq. 3): 1 iff the prediction is non-empty, is a byte prefix of
/// the true continuation `truth`, and ends on one of its token `boundaries`
/// ([`token_boundaries`]); else 0. Ending on a boundary rules out a prediction that stops inside a
/// token (`" th"` for `" the"`), which would otherwise be rewarded for being vague.
pub fn prefix_match_reward(prediction: &[u8], truth: &[u8], boundaries: &[usize]) -> f32 {
    let hit = !prediction.is_empty() && truth.starts_with(prediction) && boundaries.contains(&prediction.len());
    if hit {
        1.0
    } else {
        0.0
    }
}

/// RPT App. A, first-token match: 1 iff the first token of the prediction (the trainer tokenizes
/// the extracted answer) is the true next token `x_t`; 0 also when there is no prediction.
pub fn first_token_reward(predicted_first: Option<i64>, next_token: i64) -> f32 {
    if predicted_first == Some(next_token) {
        1.0
    } else {
        0.0
    }
}

/// RPT App. A, dense reward: 1 if the prediction's first token is `x_t`, otherwise
/// `p_first = p_θ(y_0 | x_<t)`, the model's no-thought probability of the token it predicted —
/// a small positive reward for plausible misses. 0 when there is no prediction.
pub fn dense_prob_reward(predicted_first: Option<i64>, next_token: i64, p_first: f32) -> f32 {
    match predicted_first {
        Some(id) if id == next_token => 1.0,
        Some(_) => p_first,
        None => 0.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(s: &str) -> Option<String> {
        extract_answer(s, "</think>")
    }

    #[test]
    fn nested_braces_are_balanced() {
        assert_eq!(answer("<think>half</think> so \\boxed{\\frac{1}{2}}."), Some("\\frac{1}{2}".into()));
        assert_eq!(answer("</think>\\boxed{\\{1, 2\\}}"), Some("\\{1, 2\\}".into()));
        assert_eq!(answer("</think>\\boxed{\\boxed{x}}"), Some("\\boxed{x}".into()));
    }

    #[test]
    fn the_last_box_after_the_last_delimiter_wins() {
        assert_eq!(answer("</think>\\boxed{ a} or \\boxed{ b}"), Some(" b".into()));
        assert_eq!(answer("<think>\\boxed{ early}</think> \\boxed{ late}"), Some(" late".into()));
        assert_eq!(answer("<think>\\boxed{ early}</think> no box"), None);
        assert_eq!(answer("</think>\\boxed{ a}</think> then nothing"), None);
        assert_eq!(answer("</think>\\boxed{ a}</think>\\boxed{ b}"), Some(" b".into()));
    }

    #[test]
    fn whitespace_is_kept() {
        assert_eq!(answer("</think>\\boxed{ size}"), Some(" size".into()));
        assert_eq!(answer("</think>\\boxed{ a \n}"), Some(" a \n".into()));
        assert_eq!(answer("</think>\\boxed{ é}"), Some(" é".into()));
        assert_eq!(answer("</think>\\boxed{}"), Some(String::new()));
    }

    #[test]
    fn malformed_answers_are_none() {
        assert_eq!(answer("</think>\\boxed{ab"), None);
        assert_eq!(answer("</think>\\boxed{a{b}"), None);
        assert_eq!(answer("</think>\\boxed{ok} \\boxed{broken"), None);
        assert_eq!(answer("\\boxed{ no delimiter}"), None);
        assert_eq!(answer("<think>unfinished \\boxed{x}"), None);
        assert_eq!(answer(""), None);
    }

    #[test]
    fn empty_delimiter_searches_the_whole_response() {
        assert_eq!(extract_answer("\\boxed{ x} \\boxed{ y}", ""), Some(" y".into()));
    }

    fn truth() -> (Vec<u8>, Vec<usize>) {
        let tokens: Vec<Vec<u8>> = [" the", " cat", " sat"].iter().map(|t| t.as_bytes().to_vec()).collect();
        (tokens.concat(), token_boundaries(&tokens))
    }

    #[test]
    fn boundaries_are_cumulative_byte_lengths() {
        assert_eq!(truth().1, vec![4, 8, 12]);
        assert_eq!(token_boundaries(&[vec![0xC3, 0xA9], vec![b'x']]), vec![2, 3]);
        assert!(token_boundaries(&[]).is_empty());
    }

    #[test]
    fn prefix_match_needs_a_token_boundary() {
        let (x, b) = truth();
        assert_eq!(prefix_match_reward(b" the", &x, &b), 1.0);
        assert_eq!(prefix_match_reward(b" th", &x, &b), 0.0); // stops inside " the"
        assert_eq!(prefix_match_reward(b" the c", &x, &b), 0.0); // stops inside " cat"
        assert_eq!(prefix_match_reward(b" the cat", &x, &b), 1.0); // two tokens
        assert_eq!(prefix_match_reward(b" the cat sat", &x, &b), 1.0);
        assert_eq!(prefix_match_reward(b" the cat sat down", &x, &b), 0.0); // longer than the truth
        assert_eq!(prefix_match_reward(b" the dog", &x, &b), 0.0);
        assert_eq!(prefix_match_reward(b"the", &x, &b), 0.0); // missing leading space
        assert_eq!(prefix_match_reward(b"", &x, &b), 0.0);
        assert_eq!(prefix_match_reward(b"", &[], &[0]), 0.0);
    }

    #[test]
    fn first_token_and_dense_rewards() {
        assert_eq!(first_token_reward(Some(7), 7), 1.0);
        assert_eq!(first_token_reward(Some(8), 7), 0.0);
        assert_eq!(first_token_reward(None, 7), 0.0);
        assert_eq!(dense_prob_reward(Some(7), 7, 0.03), 1.0);
        assert_eq!(dense_prob_reward(Some(8), 7, 0.03), 0.03);
        assert_eq!(dense_prob_reward(None, 7, 0.03), 0.0);
    }
}

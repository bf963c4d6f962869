//! A tiny word-level tokenizer written by hand, and helpers to build corpora for it.
use std::path::{Path, PathBuf};

use rlp_model::Tokenizer;
use serde_json::json;

/// Words of the test vocabulary; ids start at 2 (0 = `<unk>`, 1 = `<s>`).
pub const WORDS: &[&str] = &[
    "the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far", "away", "hello", "world", ".", ",", "big", "small",
    "red", "blue", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
];
pub const BOS: u32 = 1;

/// Writes `tokenizer.json` for a whitespace-split word-level tokenizer whose post-processor adds
/// `<s>` in front of every sequence, like Llama's.
pub fn tokenizer(dir: &Path) -> Tokenizer {
    let mut vocab = serde_json::Map::new();
    vocab.insert("<unk>".into(), json!(0));
    vocab.insert("<s>".into(), json!(BOS));
    for (i, w) in WORDS.iter().enumerate() {
        vocab.insert((*w).into(), json!(i + 2));
    }
    let special = |id: u32, content: &str| {
        json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
               "normalized": false, "special": true})
    };
    let bos = json!({"SpecialToken": {"id": "<s>", "type_id": 0}});
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": [special(0, "<unk>"), special(BOS, "<s>")],
        "normalizer": null,
        "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [bos, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [bos, {"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<s>": {"id": "<s>", "ids": [BOS], "tokens": ["<s>"]}}
        },
        "decoder": null,
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), serde_json::to_string_pretty(&tok).unwrap()).unwrap();
    Tokenizer::from_dir(dir).unwrap()
}

pub fn write(dir: &Path, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Writes `texts` as a JSON Lines file with the text under `field`.
pub fn jsonl(dir: &Path, name: &str, field: &str, texts: &[String]) -> PathBuf {
    let mut s = String::new();
    for t in texts {
        s.push_str(&json!({ field: t, "meta": 1 }).to_string());
        s.push('\n');
    }
    write(dir, name, s)
}

/// `n` pseudo-random documents of 1..=12 words (some single-word ones fall under `min_tokens` 3).
pub fn random_docs(n: usize, seed: u64) -> Vec<String> {
    let mut x = seed;
    let mut next = move || {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (x >> 33) as usize
    };
    (0..n)
        .map(|_| {
            let len = 1 + next() % 12;
            (0..len).map(|_| WORDS[next() % WORDS.len()]).collect::<Vec<_>>().join(" ")
        })
        .collect()
}

pub fn encode_u32(tok: &Tokenizer, text: &str) -> Vec<u32> {
    tok.encode(text).unwrap().into_iter().map(|i| u32::try_from(i).unwrap()).collect()
}

//! `rlp eval` end to end on CPU with a tiny random-weight Qwen3: output structure, seeded reruns,
//! errors naming the culprit, and a run where the right answers are known (references set to what
//! greedy decoding produced), which must score pass@1 = 1.
mod common;

use std::path::{Path, PathBuf};

use std::sync::OnceLock;

use common::*;
use serde_json::{json, Value};





/// A tiny random Qwen3 (its tokenizer lacks `<think>`, so `--think` adds the delimiters), made once.
fn model() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch("model");
        run_python("tiny_models.py", &["single", s(&dir), "--arch", "qwen3", "--hidden", "64", "--layers", "2"]);
        dir
    })
}

const QUESTIONS: &[&str] = &["47 + 38 = ?", "Twelve times twelve?", "How many metres in a kilometre?", "What is 100 - 1?", "Paris is the capital of?"];

/// Problems with GSM8K-style answers; extra fields must be ignored.
fn write_problems(path: &Path, answers: &[String]) {
    let text: String = QUESTIONS
        .iter()
        .zip(answers)
        .enumerate()
        .map(|(i, (q, a))| json!({"question": q, "answer": a, "id": i}).to_string() + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
}

fn default_problems(dir: &Path) -> PathBuf {
    let path = dir.join("problems.jsonl");
    let answers: Vec<String> = ["85", "12 * 12 = 144\n#### 144", "#### 1,000", "99", "Paris"].iter().map(|a| a.to_string()).collect();
    write_problems(&path, &answers);
    path
}

fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8(stdout.to_vec()).unwrap().lines().map(|l| serde_json::from_str(l).expect("JSONL line")).collect()
}

/// Checks one run's output lines: every documented key, k samples, pass1 = fraction correct.
fn check_structure(items: &[Value], k: usize, think: bool) {
    assert_eq!(items.len(), QUESTIONS.len());
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item["index"], i);
        assert_eq!(item["question"], QUESTIONS[i]);
        assert!(item["reference"].is_string());
        let samples = item["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), k);
        for smp in samples {
            assert!(smp["answer_text"].is_string(), "{smp}");
            assert!(smp["extracted"].is_string() || smp["extracted"].is_null(), "{smp}");
            assert!(smp["correct"].is_boolean(), "{smp}");
            assert_eq!(smp["thought"].is_string(), think, "{smp}");
            assert_eq!(smp.get("thought_closed").is_some(), think, "{smp}");
            if smp["extracted"].is_null() {
                assert_eq!(smp["correct"], false);
            }
        }
        let correct = samples.iter().filter(|x| x["correct"] == true).count();
        assert_eq!(item["pass1"].as_f64().unwrap(), correct as f64 / k as f64);
    }
    // References: GSM8K's "#### " suffix is what counts.
    assert_eq!(items[1]["reference"], "144");
    assert_eq!(items[2]["reference"], "1,000");
}

fn eval_args<'a>(problems: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["eval", "--model", s(model()), "--problems", s(problems), "--max-new-tokens", "24"];
    args.extend_from_slice(extra);
    args
}

#[test]
fn sampled_answers_have_the_documented_structure() {
    let dir = scratch("structure");
    let problems = default_problems(&dir);
    // 5 problems in batches of 2: the last batch is partial.
    let out = ok(&eval_args(&problems, &["--k", "2", "--temperature", "0.8", "--seed", "3", "--batch-size", "2"]));
    check_structure(&lines(&out.stdout), 2, false);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("problems 5, k 2, pass@1 "), "{err}");
    assert!(err.contains("mean answer tokens") && !err.contains("thought tokens"), "{err}");
}

#[test]
fn thoughts_come_before_the_answers() {
    let dir = scratch("think");
    let problems = default_problems(&dir);
    let out = ok(&eval_args(&problems, &["--k", "2", "--temperature", "0.8", "--think", "--max-thought-tokens", "16", "--batch-size", "2"]));
    let items = lines(&out.stdout);
    check_structure(&items, 2, true);
    for smp in items.iter().flat_map(|i| i["samples"].as_array().unwrap()) {
        let n = smp["thought_tokens"].as_u64().unwrap();
        // The limit counts the closing delimiter, which is not part of the thought text.
        assert!(n <= 16, "{smp}");
        assert!(smp["thought_closed"] == true || n == 16, "{smp}");
        assert!(!smp["thought"].as_str().unwrap().contains("</think>"), "{smp}");
    }
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("added <think>, </think> to the vocabulary"), "{err}");
    assert!(err.contains("mean thought tokens"), "{err}");
}

#[test]
fn reruns_with_the_same_seed_are_identical() {
    let dir = scratch("rerun");
    let problems = default_problems(&dir);
    for think in [false, true] {
        let run = |seed: &str, output: &str| {
            let out_path = dir.join(output);
            let mut extra = vec!["--k", "2", "--temperature", "0.8", "--seed", seed, "--batch-size", "2", "--output", s(&out_path)];
            if think {
                extra.extend(["--think", "--max-thought-tokens", "12"]);
            }
            let out = ok(&eval_args(&problems, &extra));
            assert!(out.stdout.is_empty(), "--output given, yet stdout has output");
            std::fs::read(out_path).unwrap()
        };
        let first = run("5", "a.jsonl");
        assert_eq!(first, run("5", "b.jsonl"), "think={think}: same seed, different output");
        assert_ne!(first, run("6", "c.jsonl"), "think={think}: the seed changes nothing");
    }
}

/// Greedy decoding's extracted answers written back as references must all be judged correct:
/// extraction, GSM8K reference parsing and matching agree end to end.
#[test]
fn greedy_answers_as_references_score_one() {
    let dir = scratch("known");
    // Many arithmetic questions: a random model writes byte soup, and only answers that contain a
    // number can be made right; with 16 questions some always do.
    let questions: Vec<String> = (0..16).map(|i| format!("What is {} + {}?", 10 + 7 * i, 3 + 11 * i)).collect();
    let problems = dir.join("problems.jsonl");
    let text: String = questions.iter().map(|q| json!({"question": q, "answer": "0"}).to_string() + "\n").collect();
    std::fs::write(&problems, text).unwrap();
    // No stop strings: more numbers in the answers, and the whole answer is searched.
    let template = dir.join("numbers.toml");
    std::fs::write(&template, "prompt = \"Question: {question}\\nAnswer:\"\nextraction = \"last_number\"\n").unwrap();
    for think in [false, true] {
        // One problem per batch: each row is computed exactly as in the first run, whichever
        // problems are left in the second (padding next to other prompts could flip a near-tie).
        let mut extra = vec!["--k", "2", "--temperature", "0", "--batch-size", "1", "--max-new-tokens", "48", "--template", s(&template)];
        if think {
            extra.extend(["--think", "--max-thought-tokens", "8"]);
        }
        let mut args = vec!["eval", "--model", s(model()), "--problems", s(&problems)];
        args.extend(&extra);
        let first = ok(&args);
        let err = String::from_utf8_lossy(&first.stderr);
        assert!(err.contains("warning: --k 2 with --temperature 0"), "{err}");
        let items = lines(&first.stdout);
        let known: Vec<(usize, String)> =
            items.iter().enumerate().filter_map(|(i, it)| it["samples"][0]["extracted"].as_str().map(|e| (i, e.to_string()))).collect();
        assert!(!known.is_empty(), "think={think}: the random model wrote no number at all; pick other questions");
        let text: String = known
            .iter()
            // GSM8K style, so the "####" parsing is on the path too.
            .map(|(i, e)| json!({"question": questions[*i], "answer": format!("worked out\n#### {e}")}).to_string() + "\n")
            .collect();
        let known_path = dir.join("known.jsonl");
        std::fs::write(&known_path, text).unwrap();
        args[4] = s(&known_path);
        let second = ok(&args);
        let items = lines(&second.stdout);
        assert_eq!(items.len(), known.len());
        for item in items {
            assert_eq!(item["pass1"], 1.0, "think={think}: {item}");
        }
        let err = String::from_utf8_lossy(&second.stderr);
        assert!(err.contains("pass@1 1.0000"), "{err}");
    }
}

#[test]
fn shipped_templates_run() {
    let dir = scratch("templates");
    let problems = default_problems(&dir);
    for t in ["zero-shot", "gsm8k-few-shot", "boxed"] {
        let template = root().join("configs/eval").join(format!("{t}.toml"));
        let out = ok(&eval_args(&problems, &["--template", s(&template), "--limit", "2"]));
        assert_eq!(lines(&out.stdout).len(), 2, "{t}");
    }
}

#[test]
fn thoughts_at_the_position_limit_leave_an_empty_answer() {
    // A copy of the model with 40 positions: prompt + a 64-token thought cannot fit.
    let dir = scratch("positions");
    let small = dir.join("model");
    std::fs::create_dir_all(&small).unwrap();
    for entry in std::fs::read_dir(model()).unwrap() {
        let p = entry.unwrap().path();
        std::fs::copy(&p, small.join(p.file_name().unwrap())).unwrap();
    }
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(small.join("config.json")).unwrap()).unwrap();
    config["max_position_embeddings"] = json!(40);
    std::fs::write(small.join("config.json"), config.to_string()).unwrap();
    let problems = default_problems(&dir);
    let out = ok(&["eval", "--model", s(&small), "--problems", s(&problems), "--think", "--max-thought-tokens", "64", "--temperature", "1"]);
    let items = lines(&out.stdout);
    assert_eq!(items.len(), QUESTIONS.len());
    assert!(items.iter().any(|i| i["samples"][0]["answer_tokens"] == 0), "no row reached the limit");

    // A few-shot prompt longer than the positions is named.
    let gsm = root().join("configs/eval/gsm8k-few-shot.toml");
    fails_with(&["eval", "--model", s(&small), "--problems", s(&problems), "--template", s(&gsm)], "problems.jsonl:1: the prompt has");
}

#[test]
fn bad_inputs_are_named() {
    let dir = scratch("bad");
    let problems = default_problems(&dir);
    let m = s(model());
    fails_with(&["eval", "--model", m, "--problems", "/no/such/problems.jsonl"], "/no/such/problems.jsonl");

    let bad_json = dir.join("bad.jsonl");
    std::fs::write(&bad_json, "{\"question\": \"1 + 1?\", \"answer\": \"2\"}\n\n{\"question\": \"oops\"\n").unwrap();
    fails_with(&["eval", "--model", m, "--problems", s(&bad_json)], "bad.jsonl:3: not valid JSON");

    let no_answer = dir.join("no-answer.jsonl");
    std::fs::write(&no_answer, "{\"question\": \"1 + 1?\"}\n").unwrap();
    fails_with(&["eval", "--model", m, "--problems", s(&no_answer)], "no-answer.jsonl:1: missing `answer`");

    let unknown = dir.join("unknown.toml");
    std::fs::write(&unknown, "prompt = \"Q: {question}\\nA:\"\nextractor = \"boxed\"\n").unwrap();
    fails_with(&["eval", "--model", m, "--problems", s(&problems), "--template", s(&unknown)], "unknown.toml:2: unknown field `extractor`");

    let no_question = dir.join("no-question.toml");
    std::fs::write(&no_question, "prompt = \"Answer:\"\n").unwrap();
    fails_with(&["eval", "--model", m, "--problems", s(&problems), "--template", s(&no_question)], "`prompt` has no `{question}`");

    fails_with(&["eval", "--model", m, "--problems", s(&problems), "--template", "/no/such/t.toml"], "/no/such/t.toml");
    fails_with(&["eval", "--model", "/no/such/model", "--problems", s(&problems)], "/no/such/model");
    fails_with(&["eval", "--model", m, "--problems", s(&problems), "--k", "0"], "--k must be at least 1");
    fails_with(&["eval", "--model", m, "--problems", s(&problems), "--temperature=-1"], "temperature must be >= 0");
    fails_with(&["eval", "--model", m, "--problems", s(&problems), "--think", "--think-open", "<t>", "--think-close", "<t>"], "both `<t>`");
}

//! End-to-end tests of the built `rlp-launch` binary with `/bin/sh` workers.
//!
//! Every wait has a generous deadline that only a hung launcher reaches, and the timing
//! assertions compare against worker sleeps far longer than any scheduling jitter.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rlp-launch");
/// Only a hung launcher takes this long.
const DEADLINE: Duration = Duration::from_secs(120);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn collect<R: Read + Send + 'static>(r: R) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut s = String::new();
        let _ = BufReader::new(r).read_to_string(&mut s);
        s
    })
}

/// Waits for `child` to exit, killing it (and failing the test) past [`DEADLINE`].
fn wait(child: &mut Child, started: Instant) -> Option<i32> {
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status.code();
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("rlp-launch did not exit within {DEADLINE:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn run_cmd(mut cmd: Command) -> Run {
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn rlp-launch");
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let code = wait(&mut child, started);
    let elapsed = started.elapsed();
    let run = Run {
        code,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed,
    };
    eprintln!("--- stdout\n{}--- stderr\n{}---", run.stdout, run.stderr);
    run
}

fn run(args: &[&str]) -> Run {
    run_cmd(command(args))
}

/// `rlp-launch --nproc-per-node 2 [extra...] -- /bin/sh -c SCRIPT`
fn two_workers(extra: &[&str], script: &str) -> Run {
    let mut args = vec!["--nproc-per-node", "2"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "/bin/sh", "-c", script]);
    run(&args)
}

fn lines_of<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect()
}

#[test]
fn two_workers_get_ranks_and_prefixed_output() {
    let r = two_workers(
        &["--master-port", "29123"],
        r#"echo "$RANK $LOCAL_RANK $WORLD_SIZE $MASTER_ADDR $MASTER_PORT"; echo "err $RANK" >&2"#,
    );
    assert_eq!(r.code, Some(0));
    assert_eq!(lines_of(&r.stdout, "[rank0]: "), ["0 0 2 127.0.0.1 29123"]);
    assert_eq!(lines_of(&r.stdout, "[rank1]: "), ["1 1 2 127.0.0.1 29123"]);
    // stderr stays stderr.
    assert_eq!(lines_of(&r.stderr, "[rank0]: "), ["err 0"]);
    assert_eq!(lines_of(&r.stderr, "[rank1]: "), ["err 1"]);
    assert!(!r.stdout.contains("err "));
    for rank in 0..2 {
        let started = format!("rlp-launch: started rank {rank} (pid ");
        assert!(r
            .stderr
            .lines()
            .any(|l| l.starts_with(&started) && l.ends_with("), attempt 0")));
    }
}

#[test]
fn full_environment_contract_on_the_second_node() {
    let script = r#"echo "RANK=$RANK LOCAL_RANK=$LOCAL_RANK WORLD_SIZE=$WORLD_SIZE LOCAL_WORLD_SIZE=$LOCAL_WORLD_SIZE GROUP_RANK=$GROUP_RANK GROUP_WORLD_SIZE=$GROUP_WORLD_SIZE ROLE_NAME=$ROLE_NAME ROLE_RANK=$ROLE_RANK ROLE_WORLD_SIZE=$ROLE_WORLD_SIZE MASTER=$MASTER_ADDR:$MASTER_PORT RC=$TORCHELASTIC_RESTART_COUNT MAX=$TORCHELASTIC_MAX_RESTARTS RUN=$TORCHELASTIC_RUN_ID RDZV=$RLP_RDZV_TIMEOUT OMP=$OMP_NUM_THREADS AGENT=${TORCHELASTIC_USE_AGENT_STORE-unset} KEEP=$RLP_TEST_KEEP""#;
    let mut cmd = command(&[
        "--nnodes",
        "2",
        "--node-rank",
        "1",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "10.1.2.3",
        "--max-restarts",
        "2",
        "--run-id",
        "job9",
        "--rdzv-timeout",
        "77",
        "--",
        "/bin/sh",
        "-c",
        script,
    ]);
    cmd.env_remove("OMP_NUM_THREADS")
        .env("TORCHELASTIC_USE_AGENT_STORE", "True")
        .env("RLP_TEST_KEEP", "yes");
    let r = run_cmd(cmd);
    assert_eq!(r.code, Some(0));
    let common =
        "WORLD_SIZE=4 LOCAL_WORLD_SIZE=2 GROUP_RANK=1 GROUP_WORLD_SIZE=2 ROLE_NAME=default";
    let tail = "MASTER=10.1.2.3:29500 RC=0 MAX=2 RUN=job9 RDZV=77 OMP=1 AGENT=unset KEEP=yes";
    assert_eq!(
        lines_of(&r.stdout, "[rank2]: "),
        [format!(
            "RANK=2 LOCAL_RANK=0 {common} ROLE_RANK=2 ROLE_WORLD_SIZE=4 {tail}"
        )]
    );
    assert_eq!(
        lines_of(&r.stdout, "[rank3]: "),
        [format!(
            "RANK=3 LOCAL_RANK=1 {common} ROLE_RANK=3 ROLE_WORLD_SIZE=4 {tail}"
        )]
    );
    assert_eq!(r.stderr.matches("OMP_NUM_THREADS=1").count(), 1, "one note");
}

#[test]
fn omp_num_threads_from_the_environment_is_kept() {
    let mut cmd = command(&[
        "--nproc-per-node",
        "2",
        "--",
        "/bin/sh",
        "-c",
        "echo omp=$OMP_NUM_THREADS",
    ]);
    cmd.env("OMP_NUM_THREADS", "7");
    let r = run_cmd(cmd);
    assert_eq!(r.code, Some(0));
    assert_eq!(lines_of(&r.stdout, "[rank0]: "), ["omp=7"]);
    assert!(!r.stderr.contains("OMP_NUM_THREADS"));
}

#[test]
fn carriage_returns_end_lines() {
    let r = run(&[
        "--",
        "/bin/sh",
        "-c",
        r#"printf 'step 1\rstep 2\r\nlast' >&2"#,
    ]);
    assert_eq!(r.code, Some(0));
    assert_eq!(
        lines_of(&r.stderr, "[rank0]: "),
        ["step 1", "step 2", "last"]
    );
}

const FAIL_ONCE: &str = r#"echo "attempt $TORCHELASTIC_RESTART_COUNT"; [ "$TORCHELASTIC_RESTART_COUNT" = 0 ] && [ "$RANK" = 1 ] && { echo "rank 1 blew up" >&2; exit 3; }; exit 0"#;

#[test]
fn failed_worker_group_is_restarted() {
    let r = two_workers(&["--max-restarts", "1"], FAIL_ONCE);
    assert_eq!(r.code, Some(0));
    assert!(
        r.stderr.contains("rlp-launch: rank 1 (pid "),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("failed: exit code 3"));
    assert!(r
        .stderr
        .contains("rlp-launch: restarting the worker group (restart 1 of 1)"));
    assert!(r.stderr.contains("), attempt 1"));
    assert!(lines_of(&r.stdout, "[rank1]: ").contains(&"attempt 1"));
    assert!(lines_of(&r.stdout, "[rank0]: ").contains(&"attempt 1"));
}

#[test]
fn failure_without_restarts_exits_with_the_workers_code() {
    let r = two_workers(&["--max-restarts", "0"], FAIL_ONCE);
    assert_eq!(r.code, Some(3));
    assert!(!r.stderr.contains("restarting"));
    let last = r
        .stderr
        .lines()
        .find(|l| l.starts_with("rlp-launch: rank 1 failed: "))
        .expect("final failure line");
    assert!(last.contains("exit code 3"), "{last}");
    // No error file: the tail of its stderr explains it.
    assert!(r.stderr.contains("  rank 1 blew up"));
}

#[test]
fn error_file_message_is_reported_and_cleaned_up() {
    let script = r#"echo "file=$TORCHELASTIC_ERROR_FILE"; [ "$RANK" = 1 ] || exit 0; printf '%s' '{"message": {"message": "CUDA out of memory on rank 1", "extraInfo": {"timestamp": "0"}}}' > "$TORCHELASTIC_ERROR_FILE"; exit 1"#;
    let r = two_workers(&[], script);
    assert_eq!(r.code, Some(1));
    assert!(
        r.stderr
            .contains("rlp-launch: rank 1 failed: CUDA out of memory on rank 1"),
        "{}",
        r.stderr
    );
    let file = lines_of(&r.stdout, "[rank1]: file=")[0];
    assert!(file.ends_with("attempt_0/rank_1/error.json"), "{file}");
    let root = Path::new(file).ancestors().nth(3).unwrap();
    assert!(!root.exists(), "{} was left behind", root.display());
}

#[test]
fn failure_takes_down_the_rest_of_the_group() {
    let r = two_workers(&[], r#"[ "$RANK" = 1 ] && exit 5; sleep 100"#);
    assert_eq!(r.code, Some(5));
    assert!(r.elapsed < Duration::from_secs(60), "took {:?}", r.elapsed);
    assert!(r.stderr.contains("rank 0 (pid "));
    assert!(r.stderr.contains("stopped: killed by signal 15 (SIGTERM)"));
}

#[test]
fn workers_ignoring_sigterm_are_killed_after_the_term_timeout() {
    let r = two_workers(
        &["--term-timeout", "1"],
        r#"trap '' TERM; [ "$RANK" = 1 ] && exit 5; sleep 100"#,
    );
    assert_eq!(r.code, Some(5));
    assert!(r.elapsed < Duration::from_secs(60), "took {:?}", r.elapsed);
    assert!(r.stderr.contains("sending SIGKILL"));
}

#[test]
fn sigterm_is_forwarded_and_a_clean_stop_exits_0() {
    let script = r#"trap 'echo "got TERM"; exit 0' TERM; echo ready; while :; do sleep 0.1; done"#;
    let started = Instant::now();
    let mut child = command(&["--nproc-per-node", "2", "--", "/bin/sh", "-c", script])
        .spawn()
        .expect("spawn");
    let err = collect(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut all = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            all.push(line);
        }
        all
    });
    // Signal only once both traps are in place.
    let mut ready = 0;
    while ready < 2 {
        let left = DEADLINE.saturating_sub(started.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) if l.ends_with("]: ready") => ready += 1,
            Ok(_) => {}
            Err(_) => {
                let _ = child.kill();
                panic!("workers never got ready");
            }
        }
    }
    let pid = i32::try_from(child.id()).unwrap();
    // SAFETY: plain kill(2) of the launcher we started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let code = wait(&mut child, started);
    let stdout = reader.join().unwrap();
    let stderr = err.join().unwrap();
    eprintln!("--- stdout\n{stdout:?}\n--- stderr\n{stderr}");
    assert_eq!(code, Some(0));
    assert!(stdout.contains(&"[rank0]: got TERM".to_string()));
    assert!(stdout.contains(&"[rank1]: got TERM".to_string()));
    assert!(stderr.contains("rlp-launch: got SIGTERM, forwarding it to the workers"));
    assert!(!stderr.contains("restarting"));
}

#[test]
fn a_signal_that_workers_do_not_survive_exits_128_plus_signo() {
    let script = r#"echo ready; while :; do sleep 0.1; done"#;
    let started = Instant::now();
    let mut child = command(&["--max-restarts", "3", "--", "/bin/sh", "-c", script])
        .spawn()
        .expect("spawn");
    let err = collect(child.stderr.take().unwrap());
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "[rank0]: ready\n");
    // SAFETY: plain kill(2) of the launcher we started.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let code = wait(&mut child, started);
    let stderr = err.join().unwrap();
    assert_eq!(code, Some(130), "{stderr}");
    assert!(!stderr.contains("restarting"), "{stderr}");
}

#[test]
fn bad_input_is_named() {
    let r = run(&[
        "--nnodes",
        "2",
        "--node-rank",
        "2",
        "--master-addr",
        "h",
        "--",
        "/bin/true",
    ]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("--node-rank"), "{}", r.stderr);

    let r = run(&["--nnodes", "2", "--", "/bin/true"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("--master-addr"), "{}", r.stderr);

    let r = run(&["--"]);
    assert_eq!(r.code, Some(2));
    assert!(r.stderr.contains("no worker command"), "{}", r.stderr);

    let r = run(&["--nproc-per-node", "2", "--", "/no/such/rlp-worker", "x"]);
    assert_eq!(r.code, Some(1));
    assert!(r.stderr.contains("/no/such/rlp-worker"), "{}", r.stderr);
}

//! Two Gloo ranks as two threads of this test process, each with its own TCPStore client and
//! process group (exactly what two processes would hold), plus the bad-input cases.
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use rlp_dist::{Buckets, Dist, DistEnv, DistOptions, Launcher, ReduceOp};
use tch::{Device, Kind, Tensor};

/// One scenario at a time, with c10d's FlightRecorder off. A real job has one process group per
/// process; here two ranks are two threads of one process, and c10d 2.11's process-wide
/// FlightRecorder updates a map before taking its lock (`recordWithResetEnabled`,
/// FlightRecorderDetail.hpp), so two groups enqueueing at once crashed it (SIGSEGV, about 1 run
/// in 15 under load). `TORCH_FR_BUFFER_SIZE=0` disables it; it is set while no other test
/// thread can be inside c10d.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    std::env::set_var("TORCH_FR_BUFFER_SIZE", "0");
    guard
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn env(rank: usize, world: usize, port: u16) -> DistEnv {
    DistEnv {
        launcher: Launcher::Torchrun,
        rank,
        world_size: world,
        local_rank: rank,
        local_world_size: world,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        agent_store: false,
        restart_count: 0,
    }
}

fn opts(secs: u64) -> DistOptions {
    DistOptions { rdzv_timeout: Duration::from_secs(secs), timeout: Duration::from_secs(secs) }
}

/// Runs `f(dist)` on ranks 0..world in threads; returns each rank's result.
fn on_ranks<T: Send + 'static>(world: usize, f: impl Fn(Dist) -> T + Send + Sync + Clone + 'static) -> Vec<T> {
    let port = free_port();
    let handles: Vec<_> = (0..world)
        .map(|r| {
            let f = f.clone();
            std::thread::spawn(move || f(Dist::init(&env(r, world, port), Device::Cpu, &opts(20)).expect("init")))
        })
        .collect();
    handles.into_iter().map(|h| h.join().expect("rank thread panicked")).collect()
}

fn params(rank: usize) -> BTreeMap<String, Tensor> {
    // Deliberately unequal per rank, so a broadcast or an all-reduce visibly changes them.
    let mut m = BTreeMap::new();
    for (name, shape) in [("b.weight", vec![3i64, 5]), ("a.bias", vec![7]), ("c.big", vec![40, 10])] {
        let t = (Tensor::arange(shape.iter().product::<i64>(), (Kind::Float, Device::Cpu)) + 1000.0 * rank as f64).view(shape.as_slice()).set_requires_grad(true);
        m.insert(name.to_string(), t);
    }
    m
}

#[test]
fn all_reduce_broadcast_gather() {
    let _serial = serial();
    let out = on_ranks(2, |d| {
        let t = Tensor::from_slice(&[1.0f32 + d.rank as f32, 10.0]);
        d.all_reduce(&t, ReduceOp::Sum, "t").unwrap();
        let sum = Vec::<f32>::try_from(&t).unwrap();
        let mx = d.reduce_f64(&[d.rank as f64 * 3.0, -1.0], ReduceOp::Max, "m").unwrap();
        let b = Tensor::from_slice(&[d.rank as f32 + 5.0]);
        d.broadcast(&b, 1, "b").unwrap();
        let g = d.all_gather_rows(&Tensor::from_slice(&[d.rank as f32, 0.5]).view([1, 2]), "g").unwrap();
        d.barrier("end").unwrap();
        (sum, mx, f32::try_from(&b).unwrap(), Vec::<f32>::try_from(g.view([-1])).unwrap())
    });
    for (sum, mx, b, g) in out {
        assert_eq!(sum, vec![3.0, 20.0]);
        assert_eq!(mx, vec![3.0, -1.0]);
        assert_eq!(b, 6.0);
        assert_eq!(g, vec![0.0, 0.5, 1.0, 0.5]);
    }
}

#[test]
fn bucketed_gradients_and_weights() {
    let _serial = serial();
    let out = on_ranks(2, |d| {
        let p = params(d.rank);
        // A cap that puts the 400-element tensor in a bucket of its own and the others together.
        let buckets = Buckets::new(&p, 100.0 * 4.0 / 1e6, &d);
        assert_eq!(buckets.len(), 2, "a.bias+b.weight, then c.big");
        // Gradient of sum(w * (rank + 1)) is rank + 1 everywhere; the mean over 2 ranks is 1.5.
        let loss = p.values().map(|w| (w * (d.rank as f64 + 1.0)).sum(Kind::Float)).reduce(|a, b| a + b).unwrap();
        loss.backward();
        buckets.all_reduce_grads(&p, 0.5, &d).unwrap();
        let grads: Vec<f64> = p.values().map(|w| w.grad().mean(Kind::Float).double_value(&[])).collect();
        let before = buckets.replica_divergence(&p, &d).unwrap();
        buckets.broadcast_params(&p, &d).unwrap();
        let after = buckets.replica_divergence(&p, &d).unwrap();
        let first = p["c.big"].double_value(&[1, 1]);
        (grads, before, after, first)
    });
    for (grads, before, after, first) in out {
        assert_eq!(grads, vec![1.5, 1.5, 1.5]);
        assert_eq!(before, 1000.0);
        assert_eq!(after, 0.0);
        assert_eq!(first, 11.0, "rank 0's value");
    }
}

fn init_err(e: DistEnv, secs: u64) -> String {
    match Dist::init(&e, Device::Cpu, &opts(secs)) {
        Ok(_) => panic!("init of rank {} unexpectedly succeeded", e.rank),
        Err(e) => {
            eprintln!("error: {e:#}");
            format!("{e:#}")
        }
    }
}

#[test]
fn rank_that_never_arrives() {
    let _serial = serial();
    let start = Instant::now();
    let err = init_err(env(0, 2, free_port()), 2);
    assert!(err.contains("rank 0 of 2") && err.contains("not every rank joined"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(15), "took {:?}", start.elapsed());
}

#[test]
fn unreachable_master() {
    let _serial = serial();
    let start = Instant::now();
    let err = init_err(env(1, 2, free_port()), 2);
    assert!(err.contains("rank 1 of 2") && err.contains("could not join the rendezvous store at 127.0.0.1:"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(15), "took {:?}", start.elapsed());
}

#[test]
fn port_in_use() {
    let _serial = serial();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let err = init_err(env(0, 2, port), 2);
    assert!(err.contains(&format!("MASTER_PORT {port} is probably in use")), "{err}");
}

#[test]
fn mismatched_world_sizes() {
    let _serial = serial();
    let port = free_port();
    let a = std::thread::spawn(move || init_err(env(0, 2, port), 5));
    let b = std::thread::spawn(move || init_err(env(1, 3, port), 5));
    for err in [a.join().unwrap(), b.join().unwrap()] {
        assert!(err.contains("WORLD_SIZE=3") && err.contains("WORLD_SIZE=2"), "{err}");
    }
}

#[test]
fn dead_peer_fails_the_collective() {
    let _serial = serial();
    // Rank 1 is a child process (this test binary running `dead_peer_child`) that joins and
    // exits without any teardown, as a crashed worker would.
    let port = free_port();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["dead_peer_child", "--exact", "--ignored", "--quiet"])
        .env("RLP_TEST_DEAD_PEER_PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let d = Dist::init(&env(0, 2, port), Device::Cpu, &opts(20)).expect("init");
    assert!(child.wait().unwrap().success());
    let t = Tensor::ones([4], (Kind::Float, Device::Cpu));
    let start = Instant::now();
    let err = format!("{:#}", d.all_reduce(&t, ReduceOp::Sum, "gradient bucket 0").unwrap_err());
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(err.contains("rank 0 of 2: all-reduce of gradient bucket 0 failed"), "{err}");
}

#[test]
#[ignore = "rank 1 of dead_peer_fails_the_collective, started by it"]
fn dead_peer_child() {
    let Ok(port) = std::env::var("RLP_TEST_DEAD_PEER_PORT") else { return };
    let _d = Dist::init(&env(1, 2, port.parse().unwrap()), Device::Cpu, &opts(20)).expect("init");
    std::process::exit(0); // no teardown: the sockets close with the process
}

#[test]
fn a_stuck_peer_times_out_the_collective() {
    let _serial = serial();
    let port = free_port();
    let o = DistOptions { rdzv_timeout: Duration::from_secs(20), timeout: Duration::from_secs(1) };
    let o1 = o.clone();
    let stuck = std::thread::spawn(move || {
        let d = Dist::init(&env(1, 2, port), Device::Cpu, &o1).expect("init");
        std::thread::sleep(Duration::from_secs(4)); // alive, but never joins the collective
        drop(d);
    });
    let d = Dist::init(&env(0, 2, port), Device::Cpu, &o).expect("init");
    let start = Instant::now();
    let err = d.all_reduce(&Tensor::ones([8], (Kind::Float, Device::Cpu)), ReduceOp::Sum, "gradient bucket 2").unwrap_err();
    let waited = start.elapsed();
    let msg = format!("{err:#}");
    assert!(msg.contains("rank 0 of 2: all-reduce of gradient bucket 2 failed (timeout 1 s)"), "{msg}");
    assert!(waited < Duration::from_secs(3), "waited {waited:?}");
    stuck.join().unwrap();
}

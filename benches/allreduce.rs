//! `cargo bench --bench allreduce [-- --world 2 --sizes 1,16,64 --iters 10 --device cpu]`
//!
//! In-place all-reduce (SUM, float32) through our c10d shim against `torch.distributed` running
//! the same collective under torchrun (benches/py/allreduce.py), in the same run; both sides
//! run W processes with one intra-op thread each. Bandwidth is algbw = bytes / time; for a ring the
//! bus bandwidth is algbw · 2(W−1)/W. `--device cuda` needs a `--features nccl` build.
mod common;

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::Instant;

use common::*;
use rlp_dist::{Dist, DistOptions, ReduceOp};
use tch::{Device, Kind, Tensor};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// One rank (a child process of this benchmark, started with torchrun's variables): median
/// seconds per all-reduce of each size, printed by rank 0 as one JSON line.
fn rank_main(sizes: &[usize], iters: usize, device: Device) {
    let d = Dist::from_env(device, &DistOptions::default()).expect("process group");
    let medians: Vec<f64> = sizes
        .iter()
        .map(|&mib| {
            let t = Tensor::ones([(mib << 20) as i64 / 4], (Kind::Float, d.device));
            let mut times: Vec<f64> = (0..iters + 2)
                .map(|_| {
                    sync(d.device);
                    let start = Instant::now();
                    d.all_reduce(&t, ReduceOp::Sum, "benchmark tensor").expect("all-reduce");
                    sync(d.device);
                    start.elapsed().as_secs_f64()
                })
                .skip(2)
                .collect();
            median(&mut times)
        })
        .collect();
    if d.is_main() {
        println!("{}", serde_json::to_string(&medians).expect("json"));
    }
}

/// Starts `world` copies of this benchmark as ranks (as a launcher would) and returns rank 0's
/// medians.
fn ours(world: usize) -> Vec<f64> {
    let port = free_port().to_string();
    let me = std::env::current_exe().expect("own path");
    let children: Vec<_> = (0..world)
        .map(|rank| {
            Command::new(&me)
                .args(std::env::args().skip(1))
                .envs([("RANK", rank.to_string()), ("LOCAL_RANK", rank.to_string()), ("WORLD_SIZE", world.to_string()), ("LOCAL_WORLD_SIZE", world.to_string())])
                .envs([("MASTER_ADDR", "127.0.0.1".to_string()), ("MASTER_PORT", port.clone()), ("OMP_NUM_THREADS", "1".to_string())])
                .stdout(Stdio::piped())
                .spawn()
                .expect("start a rank")
        })
        .collect();
    let outputs: Vec<_> = children.into_iter().map(|c| c.wait_with_output().expect("rank")).collect();
    assert!(outputs.iter().all(|o| o.status.success()), "a rank failed");
    serde_json::from_str(String::from_utf8_lossy(&outputs[0].stdout).trim()).expect("rank 0's JSON")
}

fn main() {
    let o = Opts::parse(&[("world", "2"), ("sizes", "1,16,64"), ("iters", "10"), ("device", "cpu")]);
    let world: usize = o.get("world").parse().expect("--world");
    let iters: usize = o.get("iters").parse().expect("--iters");
    let sizes: Vec<usize> = o.get("sizes").to_string().split(',').map(|s| s.trim().parse().expect("--sizes")).collect();
    let device = rlp_model::parse_device(o.get("device")).expect("--device");
    if std::env::var_os("RANK").is_some() {
        return rank_main(&sizes, iters, device);
    }
    let mine = ours(world);
    let torchrun = python().with_file_name("torchrun");
    let out = Command::new(&torchrun)
        .current_dir(root())
        .args(["--nproc-per-node", &world.to_string(), "--master-port", &free_port().to_string(), "benches/py/allreduce.py"])
        .args(["--sizes", o.get("sizes"), "--iters", &iters.to_string(), "--device", o.get("device")])
        .env("OMP_NUM_THREADS", "1")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", torchrun.display()));
    assert!(out.status.success(), "peer failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let peer = last_json(&String::from_utf8_lossy(&out.stdout));
    println!("all-reduce SUM float32, world {world}, {} ({}), median of {iters}", o.get("device").to_string(), if device.is_cuda() { "nccl" } else { "gloo" });
    println!("{:>8} {:>12} {:>12} {:>12} {:>12} {:>8}", "MiB", "ours ms", "torch ms", "ours GB/s", "torch GB/s", "ratio");
    for (i, &mib) in sizes.iter().enumerate() {
        let theirs = peer[mib.to_string()].as_f64().expect("peer size");
        let bytes = (mib << 20) as f64;
        println!(
            "{mib:>8} {:>12.2} {:>12.2} {:>12.2} {:>12.2} {:>7.2}x",
            mine[i] * 1e3,
            theirs * 1e3,
            bytes / mine[i] / 1e9,
            bytes / theirs / 1e9,
            theirs / mine[i]
        );
    }
}

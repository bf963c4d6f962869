//! [`Dist`]: this process's place in the job and the collectives the trainer calls.
//!
//! Start-up: read the launcher's environment ([`DistEnv`]), meet at the TCPStore (rank 0 hosts it
//! unless torchrun's agent does), check every rank agrees on the world size, then build a Gloo
//! (CPU) or NCCL (CUDA) process group on top. Every failure names this rank, the world and what
//! was being done; Gloo enforces the timeout inside each collective, so a dead or missing peer
//! becomes an error, not a hang.
use std::net::{IpAddr, TcpListener, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind, Tensor};

use crate::c10d::{Backend, ProcessGroup, ReduceOp, Store};
use crate::env::{DistEnv, Launcher};

#[derive(Debug, Clone)]
pub struct DistOptions {
    /// How long ranks wait for each other at start-up (store join, hand-shake, group creation).
    pub rdzv_timeout: Duration,
    /// How long one collective may take before it fails.
    pub timeout: Duration,
}

impl Default for DistOptions {
    fn default() -> Self {
        DistOptions { rdzv_timeout: Duration::from_secs(300), timeout: Duration::from_secs(600) }
    }
}

pub struct Dist {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    /// Where collective buffers live: the CPU for Gloo, this rank's GPU for NCCL.
    pub device: Device,
    pub restart_count: usize,
    timeout: Duration,
    pg: Option<ProcessGroup>,
    // Dropped after the group, which holds its own reference to the store.
    _store: Option<Store>,
}

impl Dist {
    /// A world of one: every collective is a no-op.
    pub fn single(device: Device) -> Dist {
        Dist { rank: 0, world: 1, local_rank: 0, device, restart_count: 0, timeout: Duration::ZERO, pg: None, _store: None }
    }

    /// Joins the job described by the environment. `device` is where the model lives: CUDA
    /// selects NCCL (on GPU `LOCAL_RANK`), the CPU selects Gloo. A process started without a
    /// launcher is a world of one. `RLP_RDZV_TIMEOUT` (seconds; `rlp-launch --rdzv-timeout`)
    /// overrides `opts.rdzv_timeout`.
    pub fn from_env(device: Device, opts: &DistOptions) -> Result<Dist> {
        let env = DistEnv::from_env()?;
        let mut opts = opts.clone();
        if let Ok(v) = std::env::var("RLP_RDZV_TIMEOUT") {
            let secs: f64 = v.trim().parse().with_context(|| format!("RLP_RDZV_TIMEOUT={v:?} is not a number of seconds"))?;
            opts.rdzv_timeout = Duration::from_secs_f64(secs.max(0.001));
        }
        Dist::init(&env, device, &opts)
    }

    pub fn init(env: &DistEnv, device: Device, opts: &DistOptions) -> Result<Dist> {
        if env.launcher == Launcher::Single {
            return Ok(Dist::single(device));
        }
        let (rank, world) = (env.rank, env.world_size);
        let who = format!("rank {rank} of {world}");
        let backend = match device {
            Device::Cuda(_) => Backend::Nccl,
            _ => Backend::Gloo,
        };
        let device = match backend {
            Backend::Nccl => Device::Cuda(env.local_rank),
            Backend::Gloo => Device::Cpu,
        };
        let addr = format!("{}:{}", env.master_addr, env.master_port);
        let server = env.is_store_server();
        let listen_fd = if server { Some(listen(&env.master_addr, env.master_port).with_context(|| format!("{who}: cannot host the rendezvous store"))?) } else { None };
        let store = Store::connect(&env.master_addr, env.master_port, world, server, listen_fd, opts.rdzv_timeout).with_context(|| {
            let secs = opts.rdzv_timeout.as_secs_f64();
            if server {
                format!("{who}: not every rank joined the rendezvous store at {addr} within {secs:.0} s (check that all ranks were started with the same MASTER_ADDR/MASTER_PORT)")
            } else {
                format!("{who}: could not join the rendezvous store at {addr} within {secs:.0} s (is rank 0 running and MASTER_ADDR reachable from here?)")
            }
        })?;
        let prefix = env.store_prefix();
        handshake(&store, &prefix, env, opts.rdzv_timeout).with_context(|| format!("{who}: rendezvous at {addr} failed"))?;
        // A single-node run keeps Gloo's peer connections on loopback too, instead of the
        // interface the hostname resolves to (unless GLOO_SOCKET_IFNAME says otherwise).
        let gloo_host = (is_loopback(&env.master_addr) && std::env::var_os("GLOO_SOCKET_IFNAME").is_none()).then_some("127.0.0.1");
        let pg = ProcessGroup::new(&store, backend, &format!("{prefix}pg/"), rank, world, opts.timeout, env.local_rank, gloo_host)
            .with_context(|| format!("{who}: cannot create the {} process group", backend.name()))?;
        Ok(Dist { rank, world, local_rank: env.local_rank, device, restart_count: env.restart_count, timeout: opts.timeout, pg: Some(pg), _store: Some(store) })
    }

    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    pub fn backend(&self) -> Option<Backend> {
        self.pg.as_ref().map(|p| p.backend)
    }

    fn fail(&self, collective: &str, what: &str, e: anyhow::Error) -> anyhow::Error {
        anyhow::anyhow!(
            "rank {} of {}: {collective} of {what} failed (timeout {:.0} s): {e:#} — another rank has probably died or stopped; see its error",
            self.rank,
            self.world,
            self.timeout.as_secs_f64()
        )
    }

    /// In-place all-reduce of `t` (on [`Dist::device`]); `what` names it in errors.
    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp, what: &str) -> Result<()> {
        match &self.pg {
            Some(pg) => pg.all_reduce(t, op).map_err(|e| self.fail("all-reduce", what, e)),
            None => Ok(()),
        }
    }

    pub fn broadcast(&self, t: &Tensor, root: usize, what: &str) -> Result<()> {
        match &self.pg {
            Some(pg) => pg.broadcast(t, root).map_err(|e| self.fail("broadcast", what, e)),
            None => Ok(()),
        }
    }

    pub fn barrier(&self, what: &str) -> Result<()> {
        match &self.pg {
            Some(pg) => pg.barrier().map_err(|e| self.fail("barrier", what, e)),
            None => Ok(()),
        }
    }

    /// All-reduces host numbers (e.g. metrics, token counts) in float64.
    pub fn reduce_f64(&self, values: &[f64], op: ReduceOp, what: &str) -> Result<Vec<f64>> {
        if self.pg.is_none() || values.is_empty() {
            return Ok(values.to_vec());
        }
        let t = Tensor::from_slice(values).to_device(self.device);
        self.all_reduce(&t, op, what)?;
        Ok(Vec::<f64>::try_from(t.to_device(Device::Cpu))?)
    }

    /// Concatenates every rank's `t` (same shape on all ranks) along dim 0, in rank order.
    pub fn all_gather_rows(&self, t: &Tensor, what: &str) -> Result<Tensor> {
        if self.pg.is_none() {
            return Ok(t.shallow_clone());
        }
        let mut shape = t.size();
        let rows = shape.first().copied().unwrap_or(1);
        shape[0] = rows * self.world as i64;
        // Each rank writes its rows into zeros, and a sum puts them all in place: small
        // tensors only (rewards, scores), so the extra traffic does not matter.
        let kind = if t.kind() == Kind::Double { Kind::Double } else { Kind::Float };
        let all = Tensor::zeros(shape.as_slice(), (kind, self.device));
        all.narrow(0, rows * self.rank as i64, rows).copy_(&t.to_kind(kind).to_device(self.device));
        self.all_reduce(&all, ReduceOp::Sum, what)?;
        Ok(all)
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

/// Binds the store's listening socket: on loopback when the master address is loopback (a
/// single-node run is then not reachable from the network), on every interface otherwise.
/// Binding here rather than inside TCPStore turns "port in use" into a clear error at once.
fn listen(host: &str, port: u16) -> Result<i32> {
    use std::os::fd::IntoRawFd;
    let bind = if is_loopback(host) {
        (host, port).to_socket_addrs().ok().and_then(|mut a| a.next()).map(|a| a.ip()).unwrap_or(IpAddr::from([127, 0, 0, 1]))
    } else {
        IpAddr::from([0, 0, 0, 0])
    };
    let listener = TcpListener::bind((bind, port)).with_context(|| {
        format!("cannot listen on {bind}:{port} (MASTER_PORT {port} is probably in use by another run: choose another with --master-port)")
    })?;
    Ok(listener.into_raw_fd())
}

/// Every rank announces its world size under `hello/<rank>` and reads everyone's: a rank
/// started with another WORLD_SIZE, or one that never arrives, is named.
fn handshake(store: &Store, prefix: &str, env: &DistEnv, timeout: Duration) -> Result<()> {
    let host = std::env::var("HOSTNAME").unwrap_or_default();
    let me = format!("{} {} {}", env.world_size, std::process::id(), host);
    store.set(&format!("{prefix}hello/{}", env.rank), me.as_bytes())?;
    let world_of = |r: usize| -> Result<usize> {
        let value = store
            .get(&format!("{prefix}hello/{r}"), timeout)
            .with_context(|| format!("rank {r} never arrived within {:.0} s", timeout.as_secs_f64()))?;
        Ok(String::from_utf8_lossy(&value).split_whitespace().next().and_then(|w| w.parse().ok()).unwrap_or(0))
    };
    let mismatch = |r: usize, world: usize| {
        anyhow::anyhow!("rank {r} was started with WORLD_SIZE={world} but this rank ({}) with WORLD_SIZE={}: all ranks must agree", env.rank, env.world_size)
    };
    // Rank 0's announcement first, and say so: rank 0 hosts the store, and if it stops at a
    // mismatch before the others have read it they would only see a closed connection.
    let root_world = world_of(0)?;
    store.add(&format!("{prefix}read_root"), 1)?;
    let mut result = if root_world != env.world_size { Err(mismatch(0, root_world)) } else { Ok(()) };
    if result.is_ok() {
        for r in 1..env.world_size {
            let world = world_of(r)?;
            if world != env.world_size {
                result = Err(mismatch(r, world));
                break;
            }
        }
    }
    if result.is_err() && env.is_store_server() {
        // Keep the store up until the ranks that came have read rank 0's world size (bounded).
        let deadline = std::time::Instant::now() + timeout.min(Duration::from_secs(10));
        while store.add(&format!("{prefix}read_root"), 0)? < env.world_size as i64 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    result?;
    // Count arrivals so a second process claiming an existing rank is caught.
    let arrived = store.add(&format!("{prefix}arrived"), 1)?;
    if arrived > env.world_size as i64 {
        bail!("more than WORLD_SIZE={} processes joined: is RANK {} used twice?", env.world_size, env.rank);
    }
    Ok(())
}

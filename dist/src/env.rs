//! Who am I in the job: rank, world, local rank, where the store lives, which restart this is.
//!
//! torchrun (and `rlp-launch`, which follows its contract) sets `RANK`, `LOCAL_RANK`,
//! `WORLD_SIZE`, `LOCAL_WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, `TORCHELASTIC_RESTART_COUNT`
//! and `TORCHELASTIC_USE_AGENT_STORE`. Under `srun` there is no agent: ranks come from
//! `SLURM_PROCID`/`SLURM_LOCALID`/`SLURM_NTASKS`, the store's host is the first node of the
//! allocation (unless `MASTER_ADDR` is set), and rank 0 hosts the store. A lone process with
//! none of these is a world of one.
use std::collections::HashMap;

use anyhow::{bail, Context, Result};

/// torchrun's default port, also ours.
pub const DEFAULT_PORT: u16 = 29500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// torchrun or `rlp-launch`.
    Torchrun,
    Slurm,
    /// No launcher: one process.
    Single,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    pub launcher: Launcher,
    pub rank: usize,
    pub world_size: usize,
    pub local_rank: usize,
    pub local_world_size: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's elastic agent already hosts the store: every rank connects as a client
    /// (as `torch.distributed`'s `_create_c10d_store` does); otherwise rank 0 hosts it.
    pub agent_store: bool,
    /// Restarts so far; process-group keys are prefixed with it so a restarted group never
    /// reads a dead attempt's keys from a store that outlived it.
    pub restart_count: usize,
}

impl DistEnv {
    pub fn from_env() -> Result<DistEnv> {
        Self::from_map(&std::env::vars().collect())
    }

    /// Reads the contract from `vars` (the process environment in production, a map in tests).
    pub fn from_map(vars: &HashMap<String, String>) -> Result<DistEnv> {
        let get = |k: &str| vars.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let num = |k: &str| -> Result<Option<usize>> {
            get(k).map(|v| v.parse::<usize>().with_context(|| format!("environment variable {k}={v:?} is not a non-negative integer"))).transpose()
        };
        let port = || -> Result<u16> {
            match get("MASTER_PORT") {
                Some(p) => p.parse().with_context(|| format!("MASTER_PORT={p:?} is not a port number")),
                None => Ok(DEFAULT_PORT),
            }
        };
        let env = if get("RANK").is_some() || get("WORLD_SIZE").is_some() {
            let need = |k: &str| -> Result<usize> { num(k)?.with_context(|| format!("{k} is not set, but RANK/WORLD_SIZE are (incomplete torchrun environment)")) };
            let world_size = need("WORLD_SIZE")?;
            DistEnv {
                launcher: Launcher::Torchrun,
                rank: need("RANK")?,
                world_size,
                local_rank: num("LOCAL_RANK")?.unwrap_or(0),
                local_world_size: num("LOCAL_WORLD_SIZE")?.unwrap_or(world_size),
                master_addr: get("MASTER_ADDR").context("MASTER_ADDR is not set (incomplete torchrun environment)")?.to_string(),
                master_port: port()?,
                agent_store: get("TORCHELASTIC_USE_AGENT_STORE") == Some("True"),
                restart_count: num("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0),
            }
        } else if get("SLURM_PROCID").is_some() && get("SLURM_NTASKS").is_some() {
            let world_size = num("SLURM_NTASKS")?.unwrap_or(1);
            let nodes = num("SLURM_NNODES")?.or(num("SLURM_JOB_NUM_NODES")?).unwrap_or(1).max(1);
            let master_addr = match get("MASTER_ADDR") {
                Some(a) => a.to_string(),
                None => {
                    let list = get("SLURM_STEP_NODELIST").or(get("SLURM_JOB_NODELIST")).or(get("SLURM_NODELIST"));
                    first_host(list.context("neither MASTER_ADDR nor SLURM_JOB_NODELIST is set: cannot tell where rank 0 runs")?)?
                }
            };
            DistEnv {
                launcher: Launcher::Slurm,
                rank: num("SLURM_PROCID")?.unwrap_or(0),
                world_size,
                local_rank: num("SLURM_LOCALID")?.unwrap_or(0),
                local_world_size: world_size.div_ceil(nodes),
                master_addr,
                master_port: port()?,
                agent_store: false,
                restart_count: num("SLURM_RESTART_COUNT")?.unwrap_or(0),
            }
        } else {
            DistEnv {
                launcher: Launcher::Single,
                rank: 0,
                world_size: 1,
                local_rank: 0,
                local_world_size: 1,
                master_addr: "127.0.0.1".into(),
                master_port: port()?,
                agent_store: false,
                restart_count: 0,
            }
        };
        env.validate()?;
        Ok(env)
    }

    fn validate(&self) -> Result<()> {
        if self.world_size == 0 {
            bail!("world size is 0");
        }
        if self.rank >= self.world_size {
            bail!("rank {} is not below the world size {}", self.rank, self.world_size);
        }
        if self.local_world_size == 0 || self.local_rank >= self.local_world_size {
            bail!("local rank {} is not below the local world size {}", self.local_rank, self.local_world_size);
        }
        Ok(())
    }

    /// Whether this process hosts the TCPStore.
    pub fn is_store_server(&self) -> bool {
        !self.agent_store && self.rank == 0
    }

    /// Key prefix of this attempt's process group in the store.
    pub fn store_prefix(&self) -> String {
        format!("rlp/attempt_{}/", self.restart_count)
    }
}

/// The first host of a Slurm node list: `gpu[003-004,010],cpu01` → `gpu003`.
pub fn first_host(list: &str) -> Result<String> {
    let first = split_top_level(list).into_iter().next().filter(|s| !s.is_empty()).with_context(|| format!("empty Slurm node list {list:?}"))?;
    let Some(open) = first.find('[') else { return Ok(first.to_string()) };
    let close = first.rfind(']').with_context(|| format!("unbalanced brackets in Slurm node list {list:?}"))?;
    let prefix = &first[..open];
    let inner = &first[open + 1..close];
    let suffix = &first[close + 1..];
    let range = inner.split(',').next().unwrap_or_default();
    let start = range.split('-').next().unwrap_or_default();
    if start.is_empty() || !start.chars().all(|c| c.is_ascii_digit()) {
        bail!("cannot read the first host of Slurm node list {list:?}");
    }
    Ok(format!("{prefix}{start}{suffix}"))
}

/// Splits on commas outside brackets.
fn split_top_level(list: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                out.push(list[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(list[start..].trim());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn torchrun_contract() {
        let e = DistEnv::from_map(&vars(&[
            ("RANK", "3"), ("LOCAL_RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_WORLD_SIZE", "2"),
            ("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "29501"), ("TORCHELASTIC_USE_AGENT_STORE", "True"),
            ("TORCHELASTIC_RESTART_COUNT", "2"),
        ]))
        .unwrap();
        assert_eq!((e.launcher, e.rank, e.world_size, e.local_rank, e.local_world_size), (Launcher::Torchrun, 3, 4, 1, 2));
        assert_eq!((e.master_addr.as_str(), e.master_port), ("10.0.0.1", 29501));
        assert!(e.agent_store && !e.is_store_server(), "with the agent's store every rank is a client");
        assert_eq!(e.store_prefix(), "rlp/attempt_2/");
        let no_agent = DistEnv::from_map(&vars(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")])).unwrap();
        assert!(no_agent.is_store_server() && no_agent.master_port == DEFAULT_PORT);
    }

    #[test]
    fn slurm_contract() {
        let e = DistEnv::from_map(&vars(&[
            ("SLURM_PROCID", "5"), ("SLURM_LOCALID", "1"), ("SLURM_NTASKS", "8"), ("SLURM_NNODES", "2"),
            ("SLURM_JOB_NODELIST", "gpu[007-008]"),
        ]))
        .unwrap();
        assert_eq!((e.launcher, e.rank, e.world_size, e.local_rank, e.local_world_size), (Launcher::Slurm, 5, 8, 1, 4));
        assert_eq!(e.master_addr, "gpu007");
        assert!(!e.is_store_server());
        let rank0 = DistEnv::from_map(&vars(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1"), ("SLURM_NODELIST", "n1"), ("MASTER_ADDR", "x")])).unwrap();
        assert_eq!(rank0.master_addr, "x", "MASTER_ADDR wins over the node list");
        assert!(rank0.is_store_server());
    }

    #[test]
    fn no_launcher_is_a_world_of_one() {
        let e = DistEnv::from_map(&HashMap::new()).unwrap();
        assert_eq!((e.launcher, e.rank, e.world_size), (Launcher::Single, 0, 1));
    }

    #[test]
    fn bad_environments_name_the_variable() {
        let err = |pairs: &[(&str, &str)]| format!("{:#}", DistEnv::from_map(&vars(pairs)).unwrap_err());
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "2")]).contains("MASTER_ADDR"));
        assert!(err(&[("RANK", "x"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]).contains("RANK=\"x\""));
        assert!(err(&[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]).contains("rank 2 is not below the world size 2"));
        assert!(err(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "99999")]).contains("MASTER_PORT"));
        assert!(err(&[("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")]).contains("RANK is not set"));
        assert!(err(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")]).contains("SLURM_JOB_NODELIST"));
    }

    #[test]
    fn first_host_of_slurm_node_lists() {
        assert_eq!(first_host("gpu[003-004,010],cpu01").unwrap(), "gpu003");
        assert_eq!(first_host("node17").unwrap(), "node17");
        assert_eq!(first_host("a01,b[1-2]").unwrap(), "a01");
        assert_eq!(first_host("rack[2]-n[5-6]").unwrap_err().to_string().contains("rack[2]-n[5-6]"), true);
        assert!(first_host("").is_err());
    }
}

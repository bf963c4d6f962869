//! Command line, named like torchrun's so that launch scripts port over unchanged.

use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;

/// Start the local workers of an rlp run with torchrun's environment contract.
#[derive(Debug, Parser)]
#[command(
    name = "rlp-launch",
    version,
    about = "torchrun-style launcher for rlp workers",
    override_usage = "rlp-launch [OPTIONS] -- WORKER_CMD [ARGS]..."
)]
pub struct Args {
    /// Number of nodes (machines) in the run.
    #[arg(long, default_value_t = 1)]
    pub nnodes: u32,

    /// Rank of this node, 0-based.
    #[arg(long = "node-rank", alias = "node_rank", default_value_t = 0)]
    pub node_rank: u32,

    /// Worker processes on this node (usually one per GPU).
    #[arg(long = "nproc-per-node", alias = "nproc_per_node", default_value_t = 1)]
    pub nproc_per_node: u32,

    /// Address of the node whose rank-0 worker hosts the store (default 127.0.0.1 on one node).
    #[arg(long = "master-addr", alias = "master_addr")]
    pub master_addr: Option<String>,

    /// Port of the store hosted by the rank-0 worker.
    // Parsed wider than u16 so that an out-of-range port gets our message, not a parse error.
    #[arg(long = "master-port", alias = "master_port", default_value_t = 29500)]
    pub master_port: u32,

    /// How many times to restart the local worker group after a worker fails.
    #[arg(long = "max-restarts", alias = "max_restarts", default_value_t = 0)]
    pub max_restarts: u32,

    /// Rendezvous timeout in seconds, handed to workers as RLP_RDZV_TIMEOUT.
    #[arg(long = "rdzv-timeout", alias = "rdzv_timeout", default_value_t = 900)]
    pub rdzv_timeout: u64,

    /// Run id, handed to workers as TORCHELASTIC_RUN_ID.
    #[arg(long = "run-id", alias = "run_id", default_value = "none")]
    pub run_id: String,

    /// Seconds workers get to exit after SIGTERM (or a forwarded signal) before SIGKILL.
    #[arg(long = "term-timeout", alias = "term_timeout", default_value_t = 30)]
    pub term_timeout: u64,

    /// The worker program and its arguments.
    // trailing_var_arg: everything after the program belongs to it (`-u`, `--config`, ...),
    // with or without a `--` separator.
    #[arg(trailing_var_arg = true, value_name = "WORKER_CMD")]
    pub command: Vec<String>,
}

/// A validated launch configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub nnodes: u32,
    pub node_rank: u32,
    pub nproc_per_node: u32,
    pub master_addr: String,
    pub master_port: u16,
    pub max_restarts: u32,
    pub rdzv_timeout_secs: u64,
    pub run_id: String,
    pub term_timeout: Duration,
    pub program: String,
    pub program_args: Vec<String>,
}

impl Config {
    /// Global rank of local worker `local_rank` on this node.
    pub fn rank_of(&self, local_rank: u32) -> u32 {
        self.node_rank * self.nproc_per_node + local_rank
    }

    pub fn world_size(&self) -> u32 {
        self.nnodes * self.nproc_per_node
    }
}

impl Args {
    pub fn into_config(self) -> Result<Config> {
        if self.nnodes < 1 {
            bail!("--nnodes must be at least 1 (got {})", self.nnodes);
        }
        if self.nproc_per_node < 1 {
            bail!(
                "--nproc-per-node must be at least 1 (got {})",
                self.nproc_per_node
            );
        }
        if self.node_rank >= self.nnodes {
            bail!(
                "--node-rank {} is out of range: it must be less than --nnodes {}",
                self.node_rank,
                self.nnodes
            );
        }
        // Checked so that rank arithmetic below can use plain multiplication.
        if self.nnodes.checked_mul(self.nproc_per_node).is_none() {
            bail!(
                "--nnodes {} times --nproc-per-node {} overflows the world size",
                self.nnodes,
                self.nproc_per_node
            );
        }
        let master_port = match u16::try_from(self.master_port) {
            Ok(p) if p >= 1 => p,
            _ => bail!(
                "--master-port must be in 1..=65535 (got {})",
                self.master_port
            ),
        };
        let master_addr = match self.master_addr {
            Some(a) if a.trim().is_empty() => bail!("--master-addr must not be empty"),
            Some(a) => a,
            // One node: the store stays on loopback, never exposed on the network.
            None if self.nnodes == 1 => "127.0.0.1".to_string(),
            None => bail!(
                "--master-addr is required when --nnodes is greater than 1 (got --nnodes {})",
                self.nnodes
            ),
        };
        if self.rdzv_timeout < 1 {
            bail!("--rdzv-timeout must be at least 1 second (got 0)");
        }
        let mut command = self.command.into_iter();
        let program = match command.next() {
            Some(p) if !p.is_empty() => p,
            Some(_) => bail!("the worker program name is empty"),
            None => bail!(
                "no worker command given; usage: rlp-launch [OPTIONS] -- WORKER_CMD [ARGS]..."
            ),
        };
        Ok(Config {
            nnodes: self.nnodes,
            node_rank: self.node_rank,
            nproc_per_node: self.nproc_per_node,
            master_addr,
            master_port,
            max_restarts: self.max_restarts,
            rdzv_timeout_secs: self.rdzv_timeout,
            run_id: self.run_id,
            term_timeout: Duration::from_secs(self.term_timeout),
            program,
            program_args: command.collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Result<Config> {
        let argv = std::iter::once("rlp-launch").chain(args.iter().copied());
        Args::try_parse_from(argv)?.into_config()
    }

    #[test]
    fn defaults_match_torchrun() {
        let c = config(&["--", "python", "train.py"]).unwrap();
        assert_eq!((c.nnodes, c.node_rank, c.nproc_per_node), (1, 0, 1));
        assert_eq!(c.master_port, 29500);
        assert_eq!(c.max_restarts, 0);
        assert_eq!(c.rdzv_timeout_secs, 900);
        assert_eq!(c.run_id, "none");
        assert_eq!(c.term_timeout, Duration::from_secs(30));
        assert_eq!(c.program, "python");
        assert_eq!(c.program_args, ["train.py"]);
    }

    #[test]
    fn master_addr_defaults_to_loopback_on_one_node() {
        assert_eq!(config(&["--", "w"]).unwrap().master_addr, "127.0.0.1");
        let c = config(&["--master-addr", "10.0.0.5", "--", "w"]).unwrap();
        assert_eq!(c.master_addr, "10.0.0.5");
    }

    #[test]
    fn master_addr_is_required_on_several_nodes() {
        let e = config(&["--nnodes", "2", "--", "w"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--master-addr"), "{e}");
        let c = config(&["--nnodes", "2", "--master-addr", "node0", "--", "w"]).unwrap();
        assert_eq!(c.master_addr, "node0");
    }

    #[test]
    fn worker_args_keep_their_flags() {
        let c = config(&[
            "--nproc-per-node",
            "2",
            "python",
            "-u",
            "train.py",
            "--lr",
            "1",
        ])
        .unwrap();
        assert_eq!(c.nproc_per_node, 2);
        assert_eq!(c.program, "python");
        assert_eq!(c.program_args, ["-u", "train.py", "--lr", "1"]);
        let c = config(&["--", "--weird-program"]).unwrap();
        assert_eq!(c.program, "--weird-program");
    }

    #[test]
    fn torchrun_underscore_spellings_are_accepted() {
        let c = config(&["--nproc_per_node", "4", "--master_port", "1234", "--", "w"]).unwrap();
        assert_eq!((c.nproc_per_node, c.master_port), (4, 1234));
    }

    #[test]
    fn bad_input_names_the_culprit() {
        let cases: &[(&[&str], &str)] = &[
            (
                &[
                    "--nnodes",
                    "2",
                    "--node-rank",
                    "2",
                    "--master-addr",
                    "a",
                    "--",
                    "w",
                ],
                "--node-rank",
            ),
            (&["--nnodes", "0", "--", "w"], "--nnodes"),
            (&["--nproc-per-node", "0", "--", "w"], "--nproc-per-node"),
            (&["--master-port", "0", "--", "w"], "--master-port"),
            (&["--master-port", "65536", "--", "w"], "--master-port"),
            (&["--master-addr", " ", "--", "w"], "--master-addr"),
            (&["--rdzv-timeout", "0", "--", "w"], "--rdzv-timeout"),
            (&["--"], "no worker command"),
            (&[], "no worker command"),
            (&["--", ""], "worker program"),
        ];
        for (args, culprit) in cases {
            let e = format!("{:#}", config(args).unwrap_err());
            assert!(e.contains(culprit), "{args:?}: {e}");
        }
    }
}

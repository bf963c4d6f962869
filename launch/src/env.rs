//! The environment each worker starts with: torchrun 2.11's contract plus RLP_RDZV_TIMEOUT.

use std::ffi::OsStr;
use std::path::Path;

use crate::cli::Config;

/// Variables the launcher never passes down even when its own environment has them.
///
/// TORCHELASTIC_USE_AGENT_STORE tells torch workers that the agent hosts the store; in our
/// launcher rank 0 of the workers hosts it, so an inherited value (say, from an outer
/// torchrun) would make every worker wait on a store that no one serves.
pub const REMOVED: &[&str] = &["TORCHELASTIC_USE_AGENT_STORE"];

/// Printed once when the launcher picks OMP_NUM_THREADS for the workers, as torchrun does.
pub const OMP_NOTE: &str = "rlp-launch: note: setting OMP_NUM_THREADS=1 for each worker \
(it is not set in this environment) so that the workers do not oversubscribe the CPUs; \
set it yourself to tune CPU threads";

/// The OMP_NUM_THREADS value the launcher adds, if any.
///
/// Like torchrun: only when the launcher's environment lacks the variable (an empty value
/// counts as set) and several workers share the node. One worker keeps libtorch's default
/// of all cores.
pub fn omp_default(inherited: Option<&OsStr>, nproc_per_node: u32) -> Option<&'static str> {
    (inherited.is_none() && nproc_per_node > 1).then_some("1")
}

/// Variables set for local worker `local_rank` in restart `attempt`; the rest is inherited.
pub fn worker_env(
    cfg: &Config,
    local_rank: u32,
    attempt: u32,
    error_file: &Path,
    omp_threads: Option<&str>,
) -> Vec<(&'static str, String)> {
    let rank = cfg.rank_of(local_rank).to_string();
    let world = cfg.world_size().to_string();
    let mut env = vec![
        ("RANK", rank.clone()),
        ("LOCAL_RANK", local_rank.to_string()),
        ("WORLD_SIZE", world.clone()),
        ("LOCAL_WORLD_SIZE", cfg.nproc_per_node.to_string()),
        ("GROUP_RANK", cfg.node_rank.to_string()),
        ("GROUP_WORLD_SIZE", cfg.nnodes.to_string()),
        ("ROLE_NAME", "default".to_string()),
        ("ROLE_RANK", rank),
        ("ROLE_WORLD_SIZE", world),
        ("MASTER_ADDR", cfg.master_addr.clone()),
        ("MASTER_PORT", cfg.master_port.to_string()),
        ("TORCHELASTIC_RESTART_COUNT", attempt.to_string()),
        ("TORCHELASTIC_MAX_RESTARTS", cfg.max_restarts.to_string()),
        ("TORCHELASTIC_RUN_ID", cfg.run_id.clone()),
        ("TORCHELASTIC_ERROR_FILE", error_file.display().to_string()),
        ("RLP_RDZV_TIMEOUT", cfg.rdzv_timeout_secs.to_string()),
    ];
    if let Some(n) = omp_threads {
        env.push(("OMP_NUM_THREADS", n.to_string()));
    }
    // As torchrun: NCCL's watchdog turns a timed-out or failed collective into an abort
    // instead of a hang (kept if the user set it).
    if std::env::var_os("TORCH_NCCL_ASYNC_ERROR_HANDLING").is_none() {
        env.push(("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1".to_string()));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::time::Duration;

    fn cfg(nnodes: u32, node_rank: u32, nproc: u32) -> Config {
        Config {
            nnodes,
            node_rank,
            nproc_per_node: nproc,
            master_addr: "node0".into(),
            master_port: 29511,
            max_restarts: 3,
            rdzv_timeout_secs: 120,
            run_id: "job7".into(),
            term_timeout: Duration::from_secs(30),
            program: "w".into(),
            program_args: vec![],
        }
    }

    fn env_map(
        c: &Config,
        local: u32,
        attempt: u32,
        omp: Option<&str>,
    ) -> HashMap<&'static str, String> {
        worker_env(c, local, attempt, Path::new("/tmp/x/error.json"), omp)
            .into_iter()
            .collect()
    }

    #[test]
    fn ranks_on_the_second_of_two_nodes() {
        let c = cfg(2, 1, 2);
        for (local, rank) in [(0, "2"), (1, "3")] {
            let e = env_map(&c, local, 0, None);
            assert_eq!(e["RANK"], rank);
            assert_eq!(e["ROLE_RANK"], rank);
            assert_eq!(e["LOCAL_RANK"], local.to_string());
            assert_eq!(e["WORLD_SIZE"], "4");
            assert_eq!(e["ROLE_WORLD_SIZE"], "4");
            assert_eq!(e["LOCAL_WORLD_SIZE"], "2");
            assert_eq!(e["GROUP_RANK"], "1");
            assert_eq!(e["GROUP_WORLD_SIZE"], "2");
        }
    }

    #[test]
    fn the_rest_of_the_contract() {
        let e = env_map(&cfg(2, 1, 2), 1, 2, None);
        assert_eq!(e["ROLE_NAME"], "default");
        assert_eq!(e["MASTER_ADDR"], "node0");
        assert_eq!(e["MASTER_PORT"], "29511");
        assert_eq!(e["TORCHELASTIC_RESTART_COUNT"], "2");
        assert_eq!(e["TORCHELASTIC_MAX_RESTARTS"], "3");
        assert_eq!(e["TORCHELASTIC_RUN_ID"], "job7");
        assert_eq!(e["TORCHELASTIC_ERROR_FILE"], "/tmp/x/error.json");
        assert_eq!(e["RLP_RDZV_TIMEOUT"], "120");
        assert!(!e.contains_key("OMP_NUM_THREADS"));
        assert!(!e.contains_key("TORCHELASTIC_USE_AGENT_STORE"));
        // Like torchrun, NCCL's async error handling is on unless the user chose otherwise.
        let nccl = std::env::var_os("TORCH_NCCL_ASYNC_ERROR_HANDLING").is_none();
        if nccl {
            assert_eq!(e["TORCH_NCCL_ASYNC_ERROR_HANDLING"], "1");
        }
        assert_eq!(e.len(), 16 + nccl as usize, "exactly the contract: {e:?}");
    }

    #[test]
    fn omp_rule() {
        assert_eq!(omp_default(None, 2), Some("1"));
        // Set by the user, even to empty: left alone.
        assert_eq!(omp_default(Some(OsStr::new("8")), 2), None);
        assert_eq!(omp_default(Some(OsStr::new("")), 2), None);
        // A lone worker keeps all cores, as under torchrun.
        assert_eq!(omp_default(None, 1), None);
        let e = env_map(&cfg(1, 0, 2), 0, 0, omp_default(None, 2));
        assert_eq!(e["OMP_NUM_THREADS"], "1");
    }
}

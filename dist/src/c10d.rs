//! Safe wrappers over the C shim (`csrc/c10d_shim.cpp`): a `TCPStore` and a Gloo or NCCL
//! process group. Errors carry c10d's own message; callers add which rank and which collective.
use std::ffi::{c_char, c_int, c_long, c_void, CStr, CString};
use std::time::Duration;

use anyhow::{bail, Result};
use tch::Tensor;

extern "C" {
    fn rlp_c10d_last_error() -> *const c_char;
    fn rlp_c10d_nccl_compiled() -> c_int;
    fn rlp_c10d_store_new(host: *const c_char, port: c_int, world: c_int, is_server: c_int, listen_fd: c_int, timeout_ms: c_long) -> *mut c_void;
    fn rlp_c10d_store_free(s: *mut c_void);
    fn rlp_c10d_store_set(s: *mut c_void, key: *const c_char, value: *const u8, len: usize) -> c_int;
    fn rlp_c10d_store_get(s: *mut c_void, key: *const c_char, timeout_ms: c_long, out: *mut *mut u8, out_len: *mut usize) -> c_int;
    fn rlp_c10d_buffer_free(p: *mut u8);
    fn rlp_c10d_store_add(s: *mut c_void, key: *const c_char, delta: c_long, out: *mut c_long) -> c_int;
    fn rlp_c10d_pg_gloo(s: *mut c_void, prefix: *const c_char, rank: c_int, world: c_int, timeout_ms: c_long, bind_host: *const c_char) -> *mut c_void;
    fn rlp_c10d_pg_nccl(s: *mut c_void, prefix: *const c_char, rank: c_int, world: c_int, timeout_ms: c_long, device: c_int) -> *mut c_void;
    fn rlp_c10d_pg_free(g: *mut c_void);
    fn rlp_c10d_allreduce(g: *mut c_void, tensor: *mut c_void, op: c_int) -> c_int;
    fn rlp_c10d_broadcast(g: *mut c_void, tensor: *mut c_void, root: c_int) -> c_int;
    fn rlp_c10d_barrier(g: *mut c_void) -> c_int;
}

fn last_error() -> String {
    // SAFETY: the shim returns a pointer to its thread-local, NUL-terminated message.
    unsafe { CStr::from_ptr(rlp_c10d_last_error()) }.to_string_lossy().trim().to_string()
}

fn check(rc: c_int) -> Result<()> {
    if rc != 0 {
        bail!("{}", last_error());
    }
    Ok(())
}

fn cstr(s: &str) -> Result<CString> {
    Ok(CString::new(s).map_err(|_| anyhow::anyhow!("{s:?} contains a NUL byte"))?)
}

fn millis(d: Duration) -> c_long {
    d.as_millis().min(c_long::MAX as u128) as c_long
}

/// Whether this build can create NCCL process groups (cargo feature `nccl`).
pub fn nccl_compiled() -> bool {
    // SAFETY: no arguments, no state.
    unsafe { rlp_c10d_nccl_compiled() != 0 }
}

/// c10d's `TCPStore`: the key-value store ranks rendezvous through.
pub struct Store(*mut c_void);

// The store is used from one thread at a time; c10d's TCPStore is itself thread-safe.
unsafe impl Send for Store {}

impl Store {
    /// Connects to (or, with `is_server`, hosts) the store at `host:port`, waiting up to
    /// `timeout` for all `world` ranks to join. `listen_fd` hands the server a socket the caller
    /// already bound (to pick the interface); the store takes ownership of it.
    pub fn connect(host: &str, port: u16, world: usize, is_server: bool, listen_fd: Option<i32>, timeout: Duration) -> Result<Store> {
        let h = cstr(host)?;
        // SAFETY: valid C string; the shim copies it.
        let p = unsafe { rlp_c10d_store_new(h.as_ptr(), port as c_int, world as c_int, is_server as c_int, listen_fd.unwrap_or(-1), millis(timeout)) };
        if p.is_null() {
            bail!("{}", last_error());
        }
        Ok(Store(p))
    }

    pub fn set(&self, key: &str, value: &[u8]) -> Result<()> {
        let k = cstr(key)?;
        // SAFETY: live handle, valid key and slice.
        check(unsafe { rlp_c10d_store_set(self.0, k.as_ptr(), value.as_ptr(), value.len()) })
    }

    /// Waits up to `timeout` for `key` to be set, then returns its value.
    pub fn get(&self, key: &str, timeout: Duration) -> Result<Vec<u8>> {
        let k = cstr(key)?;
        let mut out: *mut u8 = std::ptr::null_mut();
        let mut len = 0usize;
        // SAFETY: live handle; on success `out` is a malloc'd buffer of `len` bytes we free below.
        check(unsafe { rlp_c10d_store_get(self.0, k.as_ptr(), millis(timeout), &mut out, &mut len) })?;
        let value = unsafe { std::slice::from_raw_parts(out, len) }.to_vec();
        unsafe { rlp_c10d_buffer_free(out) };
        Ok(value)
    }

    /// Atomically adds `delta` to the counter `key`; returns the new value.
    pub fn add(&self, key: &str, delta: i64) -> Result<i64> {
        let k = cstr(key)?;
        let mut out: c_long = 0;
        // SAFETY: live handle, valid key and out pointer.
        check(unsafe { rlp_c10d_store_add(self.0, k.as_ptr(), delta as c_long, &mut out) })?;
        Ok(out as i64)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // SAFETY: the handle came from rlp_c10d_store_new and is freed once.
        unsafe { rlp_c10d_store_free(self.0) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Gloo,
    Nccl,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReduceOp {
    Sum = 0,
    Max = 1,
    Min = 2,
}

/// A c10d process group. Collectives are in place and block until done (Gloo) or until the
/// current CUDA stream is ordered after them (NCCL).
pub struct ProcessGroup {
    handle: *mut c_void,
    pub backend: Backend,
}

unsafe impl Send for ProcessGroup {}

impl ProcessGroup {
    /// Builds the group over `store`, its keys under `prefix`. `device` is the CUDA device for
    /// NCCL; `gloo_host`, if given, the address whose interface Gloo's connections use.
    pub fn new(store: &Store, backend: Backend, prefix: &str, rank: usize, world: usize, timeout: Duration, device: usize, gloo_host: Option<&str>) -> Result<ProcessGroup> {
        let p = cstr(prefix)?;
        let host = cstr(gloo_host.unwrap_or(""))?;
        // SAFETY: live store handle; the group keeps its own reference to the store.
        let handle = unsafe {
            match backend {
                Backend::Gloo => rlp_c10d_pg_gloo(store.0, p.as_ptr(), rank as c_int, world as c_int, millis(timeout), host.as_ptr()),
                Backend::Nccl => rlp_c10d_pg_nccl(store.0, p.as_ptr(), rank as c_int, world as c_int, millis(timeout), device as c_int),
            }
        };
        if handle.is_null() {
            bail!("{}", last_error());
        }
        Ok(ProcessGroup { handle, backend })
    }

    pub fn all_reduce(&self, t: &Tensor, op: ReduceOp) -> Result<()> {
        // SAFETY: `as_ptr` is tch's `torch::Tensor*`; the collective writes into its storage,
        // which `t` (a handle sharing it) keeps alive for the call.
        check(unsafe { rlp_c10d_allreduce(self.handle, t.as_ptr() as *mut c_void, op as c_int) })
    }

    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        // SAFETY: as in `all_reduce`.
        check(unsafe { rlp_c10d_broadcast(self.handle, t.as_ptr() as *mut c_void, root as c_int) })
    }

    pub fn barrier(&self) -> Result<()> {
        // SAFETY: live handle.
        check(unsafe { rlp_c10d_barrier(self.handle) })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from rlp_c10d_pg_* and is freed once.
        unsafe { rlp_c10d_pg_free(self.handle) }
    }
}

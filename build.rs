//! Shared build script for every package that produces binaries (the CLI, tests, benches).
//!
//! Two link problems of tch + the PyTorch wheel are fixed here, once:
//! 1. torch-sys passes its rpath to `cc` only, so binaries would need `LD_LIBRARY_PATH`;
//!    we add `-rpath <libtorch lib dir>` to the final link.
//! 2. rustc links with `--as-needed`, which drops `libtorch_cuda.so` because no symbol of it is
//!    referenced directly; CUDA would then be "unavailable" on a GPU machine.
//!
//! `rustc-link-arg` does not propagate from dependencies, so each member points its `build`
//! key at this file. `DEP_TCH_LIBTORCH_LIB` is set because each member depends on torch-sys.
use std::path::Path;

pub fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib_dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        println!("cargo:warning=DEP_TCH_LIBTORCH_LIB unset: binaries will need LD_LIBRARY_PATH");
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib_dir}");
    if Path::new(&lib_dir).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

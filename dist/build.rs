//! Builds the c10d shim (`csrc/c10d_shim.cpp`) against the headers of the libtorch that
//! torch-sys links, and links it to `torch_cpu`/`c10` (Gloo, TCPStore and PrefixStore live
//! there; gloo itself is statically inside `libtorch_cpu.so`). With feature `nccl` it also
//! compiles ProcessGroupNCCL, which needs CUDA headers: the wheel's `nvidia/cu13` and
//! `nvidia/nccl` includes plus the header-only `nvidia-cuda-crt`/`nvidia-cuda-cccl` wheels that
//! `scripts/setup.sh --nccl` installs under `.venv/cuda-headers` (or `RLP_CUDA_HEADERS`).
use std::path::{Path, PathBuf};

#[path = "../build.rs"]
mod link_args;

fn main() {
    link_args::main();
    println!("cargo:rerun-if-changed=csrc/c10d_shim.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    println!("cargo:rerun-if-env-changed=RLP_CUDA_HEADERS");
    let lib_dir = PathBuf::from(std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys did not report its libtorch (DEP_TCH_LIBTORCH_LIB)"));
    let include = lib_dir.join("../include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .file("csrc/c10d_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .include("/usr/include") // Debian's libgloo-dev: gloo/*.h
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .define("GLOG_USE_GLOG_EXPORT", None)
        .define("USE_C10D_GLOO", None)
        .warnings(false);
    if !Path::new("/usr/include/gloo/algorithm.h").exists() {
        println!("cargo:warning=gloo headers missing (/usr/include/gloo): install Debian's libgloo-dev (scripts/setup.sh does)");
    }
    let nccl = std::env::var("CARGO_FEATURE_NCCL").is_ok();
    if nccl {
        // site-packages/torch/lib → site-packages/nvidia/...
        let site = lib_dir.join("../..");
        let extra = std::env::var("RLP_CUDA_HEADERS").map(PathBuf::from).unwrap_or_else(|_| {
            PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default()).join("../.venv/cuda-headers")
        });
        for dir in [site.join("nvidia/cu13/include"), site.join("nvidia/nccl/include"), extra.join("nvidia/cu13/include")] {
            build.include(dir);
        }
        build.define("USE_C10D_NCCL", None).define("USE_CUDA", None).define("RLP_WITH_NCCL", None);
    }
    build.compile("rlp_c10d_shim");
    println!("cargo:rustc-link-search=native={}", lib_dir.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
    if nccl {
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
}

// A thin C ABI over PyTorch's c10d: TCPStore, PrefixStore, ProcessGroupGloo and (with
// RLP_WITH_NCCL) ProcessGroupNCCL, plus the four collectives the trainer needs.
//
// Why a shim: tch exposes no c10d. Everything here is PyTorch's own C++ from libtorch_cpu.so /
// libtorch_cuda.so; the shim only constructs objects and forwards calls, and it never touches a
// gloo type by value (the Debian gloo headers are older than the gloo inside libtorch).
//
// Every entry point catches all exceptions; failures return NULL / -1 and leave a message in a
// thread-local buffer read by rlp_c10d_last_error().
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef RLP_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstring>
#include <string>
#include <vector>

namespace {

thread_local std::string last_error;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const c10::Error& e) {
    last_error = e.what_without_backtrace();
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return -1;
}

struct Store {
  c10::intrusive_ptr<c10d::Store> store;
};

struct Group {
  c10::intrusive_ptr<c10d::Backend> backend;
};

at::Tensor& as_tensor(void* p) {
  // tch's C_tensor is a torch::Tensor* (libtch/torch_api.h: `typedef torch::Tensor *tensor;`).
  return *static_cast<at::Tensor*>(p);
}

c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 0:
      return c10d::ReduceOp::SUM;
    case 1:
      return c10d::ReduceOp::MAX;
    case 2:
      return c10d::ReduceOp::MIN;
    default:
      throw std::invalid_argument("unknown reduce op " + std::to_string(op));
  }
}

void wait(const c10::intrusive_ptr<c10d::Work>& work) {
  // Gloo enforces the group's timeout inside the operation and throws; NCCL's wait makes the
  // current stream wait and its watchdog enforces the timeout.
  work->wait();
}

}  // namespace

extern "C" {

const char* rlp_c10d_last_error() { return last_error.c_str(); }

int rlp_c10d_nccl_compiled() {
#ifdef RLP_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// `listen_fd` >= 0: the server adopts this already-bound listening socket (so the caller chooses
// the interface, e.g. loopback only); -1: TCPStore binds the port itself.
void* rlp_c10d_store_new(const char* host, int port, int world_size, int is_server, int listen_fd, long timeout_ms) {
  Store* out = nullptr;
  int rc = guarded([&] {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world_size);
    // Clients must also wait: that is what makes them register with the server's count.
    opts.waitWorkers = true;
    opts.timeout = std::chrono::milliseconds(timeout_ms);
    opts.multiTenant = is_server != 0;
    if (listen_fd >= 0) opts.masterListenFd = listen_fd;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    out = new Store{store};
  });
  return rc == 0 ? out : nullptr;
}

void rlp_c10d_store_free(void* s) { delete static_cast<Store*>(s); }

int rlp_c10d_store_set(void* s, const char* key, const unsigned char* value, size_t len) {
  return guarded([&] {
    std::vector<uint8_t> v(value, value + len);
    static_cast<Store*>(s)->store->set(key, v);
  });
}

// Waits up to `timeout_ms` for `key`, then copies its value into a malloc'd buffer the caller
// releases with rlp_c10d_buffer_free.
int rlp_c10d_store_get(void* s, const char* key, long timeout_ms, unsigned char** out, size_t* out_len) {
  return guarded([&] {
    auto& store = static_cast<Store*>(s)->store;
    store->wait({std::string(key)}, std::chrono::milliseconds(timeout_ms));
    std::vector<uint8_t> v = store->get(key);
    *out = static_cast<unsigned char*>(std::malloc(v.size() + 1));
    if (*out == nullptr) throw std::bad_alloc();
    std::memcpy(*out, v.data(), v.size());
    *out_len = v.size();
  });
}

void rlp_c10d_buffer_free(unsigned char* p) { std::free(p); }

int rlp_c10d_store_add(void* s, const char* key, long delta, long* out) {
  return guarded([&] { *out = static_cast<long>(static_cast<Store*>(s)->store->add(key, delta)); });
}

// `bind_host` non-empty: Gloo's peer connections use the interface of that address (e.g.
// 127.0.0.1 for a single-node run); empty: GLOO_SOCKET_IFNAME, else the hostname's address.
void* rlp_c10d_pg_gloo(void* s, const char* prefix, int rank, int world_size, long timeout_ms, const char* bind_host) {
  Group* out = nullptr;
  int rc = guarded([&] {
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), static_cast<Store*>(s)->store);
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10::intrusive_ptr<c10d::ProcessGroupGloo::Options> opts;
    if (bind_host != nullptr && bind_host[0] != '\0') {
      opts = c10d::ProcessGroupGloo::Options::create(timeout);
      opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(bind_host));
    } else {
      opts = c10d::ProcessGroupGloo::Options::create_default(timeout);
    }
    auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(prefixed, rank, world_size, opts);
    out = new Group{pg};
  });
  return rc == 0 ? out : nullptr;
}

void* rlp_c10d_pg_nccl(void* s, const char* prefix, int rank, int world_size, long timeout_ms, int device) {
  Group* out = nullptr;
  int rc = guarded([&] {
#ifdef RLP_WITH_NCCL
    int count = static_cast<int>(c10::cuda::device_count());
    if (count == 0) throw std::runtime_error("NCCL needs a CUDA device, but none is visible");
    if (device < 0 || device >= count)
      throw std::runtime_error("LOCAL_RANK " + std::to_string(device) + " has no GPU: " + std::to_string(count) + " visible");
    // NCCL's communicator is created lazily on the current device: make it ours first.
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    auto prefixed = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), static_cast<Store*>(s)->store);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = std::chrono::milliseconds(timeout_ms);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(prefixed, rank, world_size, opts);
    out = new Group{pg};
#else
    (void)s, (void)prefix, (void)rank, (void)world_size, (void)timeout_ms, (void)device;
    throw std::runtime_error("this build has no NCCL: rebuild with `--features nccl` (see README, distributed training)");
#endif
  });
  return rc == 0 ? out : nullptr;
}

void rlp_c10d_pg_free(void* g) { delete static_cast<Group*>(g); }

int rlp_c10d_allreduce(void* g, void* tensor, int op) {
  return guarded([&] {
    std::vector<at::Tensor> ts{as_tensor(tensor)};
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduce_op(op);
    wait(static_cast<Group*>(g)->backend->allreduce(ts, opts));
  });
}

int rlp_c10d_broadcast(void* g, void* tensor, int root) {
  return guarded([&] {
    std::vector<at::Tensor> ts{as_tensor(tensor)};
    c10d::BroadcastOptions opts;
    opts.rootRank = root;
    opts.rootTensor = 0;
    wait(static_cast<Group*>(g)->backend->broadcast(ts, opts));
  });
}

int rlp_c10d_barrier(void* g) {
  return guarded([&] { wait(static_cast<Group*>(g)->backend->barrier(c10d::BarrierOptions())); });
}

}  // extern "C"

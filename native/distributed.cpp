// torch.distributed on libtorch's c10d: a TCPStore rendezvous (rank 0 hosts it) and one process group
// (Gloo on CPU; NCCL where the addon is built against a CUDA libtorch with NCCL headers).
//
// Thin by design: option parsing, env variables, sum->avg, error wording live in
// lib/torch/distributed.ts. Here:
//  - distInit     builds store + process group on the libuv pool (both block until every rank joins
//                 or the timeout passes), so the JS thread never waits on a peer;
//  - collectives  are *enqueued* on the JS thread (cheap: Gloo/NCCL queue the work on their own
//                 threads), which keeps their order identical to the JS call order on every rank (c10d
//                 requires the same order everywhere); only work->wait() runs on the pool;
//  - a dead peer (connection reset) or a hung one (Gloo's per-op timeout from Options) makes wait()
//    throw; that becomes a TorchError with code E_DIST.
#include "common.h"
#include "async.h"
#include "compat.h"

#include <atomic>
#include <chrono>
#include <memory>
#include <string>

// Gloo: Debian's libtorch and the official distributions are built with it, but ProcessGroupGloo.hpp
// only declares the class under USE_C10D_GLOO and needs gloo's own headers (libgloo-dev on Debian).
// Without them the addon still builds; init({backend:'gloo'}) then fails with E_DIST.
#if __has_include(<gloo/algorithm.h>) && __has_include(<torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>)
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#define TIM_HAVE_GLOO 1
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#else
#define TIM_HAVE_GLOO 0
#endif

// NCCL: only in CUDA builds (CMake defines TIM_WITH_CUDA) whose include path has nccl.h; the
// ProcessGroupNCCL symbols live in libtorch_cuda, which CUDA builds already link. Not compiled on
// CPU-only machines (docs/distributed.md).
#if defined(TIM_WITH_CUDA) && __has_include(<nccl.h>) && \
    __has_include(<torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>)
#ifndef USE_C10D_NCCL
#define USE_C10D_NCCL
#endif
#define TIM_HAVE_NCCL 1
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#else
#define TIM_HAVE_NCCL 0
#endif

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

namespace tim {
namespace {

using Millis = std::chrono::milliseconds;
using Backend = TIM_C10D_BACKEND;

struct DistState {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Backend> pg;
  int rank = 0;
  int size = 0;
  std::string backend;
};

// Deliberately leaked when the process exits without destroy(): ~ProcessGroupGloo joins its worker
// threads, which may be blocked on a hung peer until the timeout, so a static destructor would turn a
// clean process.exit() into a long hang. destroy() releases it properly (off the JS thread).
std::shared_ptr<DistState>& g_state = *new std::shared_ptr<DistState>();
// An init or destroy is in flight. Set on the JS thread; cleared by the worker when it fails (the
// `done` callback, which runs only on success, clears it otherwise). Atomic for that hand-over.
std::atomic<bool> g_busy{false};

// Runs f, turning anything c10d / gloo throws into a TorchError with code E_DIST.
template <typename F>
void distCall(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    // Everything, even a throwTorch error, becomes E_DIST: f only ever calls into c10d.
    throwTorch(messageOf(e), "E_DIST");
  }
}

DistState& state() {
  if (!g_state || !g_state->pg) throwTorch("the process group is not initialized (call torch.distributed.init() first)", "E_DIST");
  return *g_state;
}

int intArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsNumber()) throwType(std::string(what) + ": expected a number", "E_ARG");
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (d != (double)(int64_t)d || d < INT32_MIN || d > INT32_MAX) throwRange(std::string(what) + ": expected an integer", "E_RANGE");
  return (int)d;
}

std::string strArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (!info[i].IsString()) throwType(std::string(what) + ": expected a string", "E_ARG");
  return info[i].As<Napi::String>().Utf8Value();
}

// The tensor of a collective: Gloo/NCCL read and write data_ptr() over numel() elements, so a
// strided view would silently exchange the wrong memory.
at::Tensor commTensor(const Napi::CallbackInfo& info, size_t i, const char* what) {
  const at::Tensor& t = tensorAt(info.Env(), info[i]);
  if (!t.is_contiguous()) throwTorch(std::string(what) + ": the tensor must be contiguous (call .contiguous() first)", "E_DIST");
  return t;
}

// Waits for the work on the libuv pool and resolves with done(env).
Napi::Value waitAsync(Napi::Env env, const std::string& what, c10::intrusive_ptr<c10d::Work> work,
                      AsyncTask::Done done) {
  return AsyncTask::start(env, what, [work]() { distCall([&] { work->wait(); }); }, std::move(done));
}

// distInit(backend, rank, size, storeHost, port, timeoutMs, deviceKind, deviceName, storeServer,
//          storePrefix) -> Promise<void>
// deviceKind: 'hostname' (bind the Gloo device to deviceName), 'interface' (to the NIC deviceName),
// 'default' (this machine's hostname, else loopback). storeServer: this process hosts the TCPStore
// (rank 0, unless a launcher such as torchrun hosts it); storePrefix: key prefix ('' for none). TS
// picks all of them.
Napi::Value Init(const Napi::CallbackInfo& info) {
  return guard(info, "distributed.init", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    std::string backend = strArg(info, 0, "backend");
    int rank = intArg(info, 1, "rank");
    int size = intArg(info, 2, "worldSize");
    std::string host = strArg(info, 3, "masterAddr");
    int port = intArg(info, 4, "masterPort");
    int timeoutMs = intArg(info, 5, "timeoutMs");
    std::string deviceKind = strArg(info, 6, "deviceKind");
    std::string deviceName = strArg(info, 7, "deviceName");
    if (!info[8].IsBoolean()) throwType("storeServer: expected a boolean", "E_ARG");
    bool storeServer = info[8].As<Napi::Boolean>().Value();
    std::string storePrefix = strArg(info, 9, "storePrefix");
    if (size < 1 || rank < 0 || rank >= size) throwRange("rank must be in [0, worldSize)", "E_DIST");
    if (port < 0 || port > 65535) throwRange("masterPort must be in [0, 65535]", "E_DIST");
    if (timeoutMs < 1) throwRange("timeoutMs must be positive", "E_DIST");
    if (g_busy) throwTorch("another init() or destroy() is in progress", "E_DIST");
    if (g_state) throwTorch("the process group is already initialized (call destroy() first)", "E_DIST");
    if (backend == "nccl" && !TIM_HAVE_NCCL)
      throwTorch("backend 'nccl' is not available: the addon was built without a CUDA libtorch with NCCL headers", "E_DIST");
    if (backend == "gloo" && !TIM_HAVE_GLOO)
      throwTorch("backend 'gloo' is not available: the addon was built without gloo headers (libgloo-dev)", "E_DIST");
    if (backend != "gloo" && backend != "nccl") throwRange("backend must be 'gloo' or 'nccl'", "E_DIST");

    auto fresh = std::make_shared<DistState>();
    fresh->rank = rank;
    fresh->size = size;
    fresh->backend = backend;
    g_busy = true;
    auto work = [=]() {
      struct ClearOnThrow {
        bool ok = false;
        ~ClearOnThrow() { if (!ok) g_busy = false; }
      } clear;
      distCall([&] {
        Millis timeout(timeoutMs);
        c10d::TCPStoreOptions so;
        so.port = static_cast<std::uint16_t>(port);
        so.isServer = storeServer;
        so.numWorkers = static_cast<std::size_t>(size);
        so.waitWorkers = true;  // rank 0 returns only when all ranks reached the store (or timeout)
        so.timeout = timeout;
        c10::intrusive_ptr<c10d::Store> store = c10::make_intrusive<c10d::TCPStore>(host, so);
        if (!storePrefix.empty()) store = c10::make_intrusive<c10d::PrefixStore>(storePrefix, store);
        fresh->store = store;
        if (backend == "gloo") {
#if TIM_HAVE_GLOO
          auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
          if (deviceKind == "interface") opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(deviceName));
          else if (deviceKind == "hostname") opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(deviceName));
          else opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
          fresh->pg = c10::make_intrusive<c10d::ProcessGroupGloo>(fresh->store, rank, size, opts);
#endif
        } else {
#if TIM_HAVE_NCCL
          auto opts = c10d::ProcessGroupNCCL::Options::create();
          opts->timeout = timeout;
          fresh->pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(fresh->store, rank, size, opts);
#endif
        }
      });
      clear.ok = true;
    };
    auto done = [fresh](Napi::Env env) -> Napi::Value {
      g_busy = false;
      g_state = fresh;
      return env.Undefined();
    };
    return AsyncTask::start(env, "distributed.init", work, done);
  });
}

c10d::ReduceOp reduceOpFrom(const std::string& op) {
  if (op == "sum") return c10d::ReduceOp::SUM;
  if (op == "product") return c10d::ReduceOp::PRODUCT;
  if (op == "max") return c10d::ReduceOp::MAX;
  if (op == "min") return c10d::ReduceOp::MIN;
  throwRange("op must be one of 'sum', 'product', 'max', 'min' (got '" + op + "')", "E_DIST");
}

// distAllReduce(tensor, op) -> Promise<void>, in place.
Napi::Value AllReduce(const Napi::CallbackInfo& info) {
  return guard(info, "distributed.allReduce", [&]() -> Napi::Value {
    at::Tensor t = commTensor(info, 0, "allReduce");
    std::string op = strArg(info, 1, "op");
    DistState& s = state();
    c10d::AllreduceOptions opts;
    opts.reduceOp = reduceOpFrom(op);
    std::vector<at::Tensor> ts{t};
    c10::intrusive_ptr<c10d::Work> work;
    distCall([&] { work = s.pg->allreduce(ts, opts); });
    // ts (captured) keeps the storage alive until the work is done, even if JS disposes the tensor.
    return waitAsync(info.Env(), "distributed.allReduce(" + describeTensor(t) + ")", work,
                     [ts](Napi::Env env) { return env.Undefined(); });
  });
}

// distBroadcast(tensor, src) -> Promise<void>, in place.
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  return guard(info, "distributed.broadcast", [&]() -> Napi::Value {
    at::Tensor t = commTensor(info, 0, "broadcast");
    int src = intArg(info, 1, "src");
    DistState& s = state();
    if (src < 0 || src >= s.size) throwRange("broadcast: src must be in [0, worldSize)", "E_DIST");
    c10d::BroadcastOptions opts;
    opts.rootRank = src;
    opts.rootTensor = 0;
    std::vector<at::Tensor> ts{t};
    c10::intrusive_ptr<c10d::Work> work;
    distCall([&] { work = s.pg->broadcast(ts, opts); });
    return waitAsync(info.Env(), "distributed.broadcast(" + describeTensor(t) + ")", work,
                     [ts](Napi::Env env) { return env.Undefined(); });
  });
}

// distAllGather(tensor) -> Promise<handle[]>: worldSize new tensors, index = rank.
Napi::Value AllGather(const Napi::CallbackInfo& info) {
  return guard(info, "distributed.allGather", [&]() -> Napi::Value {
    at::Tensor t = commTensor(info, 0, "allGather");
    DistState& s = state();
    auto out = std::make_shared<std::vector<std::vector<at::Tensor>>>(1);
    for (int i = 0; i < s.size; ++i) (*out)[0].push_back(at::empty_like(t, at::MemoryFormat::Contiguous));
    std::vector<at::Tensor> in{t};
    c10::intrusive_ptr<c10d::Work> work;
    distCall([&] { work = s.pg->allgather(*out, in); });
    return waitAsync(info.Env(), "distributed.allGather(" + describeTensor(t) + ")", work,
                     [out, in](Napi::Env env) -> Napi::Value {
                       auto& list = (*out)[0];
                       Napi::Array arr = Napi::Array::New(env, list.size());
                       for (size_t i = 0; i < list.size(); ++i) arr.Set((uint32_t)i, Napi::Number::New(env, insertTensor(env, list[i])));
                       return arr;
                     });
  });
}

// distBarrier() -> Promise<void>
Napi::Value Barrier(const Napi::CallbackInfo& info) {
  return guard(info, "distributed.barrier", [&]() -> Napi::Value {
    DistState& s = state();
    c10::intrusive_ptr<c10d::Work> work;
    distCall([&] { work = s.pg->barrier(c10d::BarrierOptions()); });
    return waitAsync(info.Env(), "distributed.barrier", work, [](Napi::Env env) { return env.Undefined(); });
  });
}

// distDestroy() -> Promise<void>: drops the group and the store. The destructors join c10d's threads
// (bounded by the timeout when a peer hangs), so they run on the pool. No-op when not initialized.
Napi::Value Destroy(const Napi::CallbackInfo& info) {
  return guard(info, "distributed.destroy", [&]() -> Napi::Value {
    if (g_busy) throwTorch("another init() or destroy() is in progress", "E_DIST");
    auto old = std::move(g_state);
    g_state.reset();
    g_busy = true;
    return AsyncTask::start(
        info.Env(), "distributed.destroy",
        [old]() mutable {
          // Always clear busy, even if a destructor threw: the state is gone either way.
          struct Clear { ~Clear() { g_busy = false; } } clear;
          distCall([&] { if (old) { old->pg.reset(); old->store.reset(); } });
        },
        [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  });
}

// distInfo() -> { initialized, rank, worldSize, backend, busy, gloo, nccl }
Napi::Value Info(const Napi::CallbackInfo& info) {
  return guard(info, "distributed.info", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    Napi::Object o = Napi::Object::New(env);
    bool on = g_state && g_state->pg;
    o.Set("initialized", Napi::Boolean::New(env, on));
    o.Set("rank", on ? Napi::Value(Napi::Number::New(env, g_state->rank)) : env.Null());
    o.Set("worldSize", on ? Napi::Value(Napi::Number::New(env, g_state->size)) : env.Null());
    o.Set("backend", on ? Napi::Value(Napi::String::New(env, g_state->backend)) : env.Null());
    o.Set("busy", Napi::Boolean::New(env, g_busy.load()));
    o.Set("gloo", Napi::Boolean::New(env, TIM_HAVE_GLOO));
    o.Set("nccl", Napi::Boolean::New(env, TIM_HAVE_NCCL));
    return o;
  });
}

}  // namespace

void registerDistributed(Napi::Env env, Napi::Object exports) {
  exports.Set("distInit", Napi::Function::New(env, Init, "distInit"));
  exports.Set("distAllReduce", Napi::Function::New(env, AllReduce, "distAllReduce"));
  exports.Set("distBroadcast", Napi::Function::New(env, Broadcast, "distBroadcast"));
  exports.Set("distAllGather", Napi::Function::New(env, AllGather, "distAllGather"));
  exports.Set("distBarrier", Napi::Function::New(env, Barrier, "distBarrier"));
  exports.Set("distDestroy", Napi::Function::New(env, Destroy, "distDestroy"));
  exports.Set("distInfo", Napi::Function::New(env, Info, "distInfo"));
}

}  // namespace tim

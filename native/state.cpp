// Process-wide libtorch state: RNG, threads, autocast, CUDA presence, build information.
#include "common.h"
#include "compat.h"
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <ATen/Context.h>
#include <torch/cuda.h>
#include <torch/csrc/autograd/forward_grad.h>
#include <mutex>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#ifndef TIM_SOURCE_HASH
#define TIM_SOURCE_HASH "unknown"
#endif

namespace tim {

static at::Generator generatorFor(const Napi::Value& v) {
  c10::Device d = v.IsString() ? deviceFrom(v) : c10::Device(c10::kCPU);
  if (d.is_cpu()) return at::detail::getDefaultCPUGenerator();
  if (d.is_cuda()) {
    if (!torch::cuda::is_available()) throwTorch("CUDA is not available", "E_DEVICE");
    return at::globalContext().defaultGenerator(d);
  }
  throwRange("no generator for device " + d.str(), "E_DEVICE");
}

static Napi::Value ManualSeed(const Napi::CallbackInfo& info) {
  return guard(info, "manualSeed", [&]() -> Napi::Value {
    if (!info[0].IsNumber() && !info[0].IsBigInt()) throwType("manualSeed expects an integer");
    uint64_t seed;
    if (info[0].IsBigInt()) {
      bool lossless = true;
      seed = info[0].As<Napi::BigInt>().Uint64Value(&lossless);
      if (!lossless) throwRange("manualSeed: BigInt seed must be in [0, 2^64)");
    } else {
      double d = info[0].As<Napi::Number>().DoubleValue();
      // casting NaN or an out-of-range double to an integer is undefined behaviour
      if (!(d >= 0) || d >= 9007199254740992.0 || d != (double)(int64_t)d)
        throwRange("manualSeed: seed must be an integer in [0, 2^53) (pass a BigInt for larger seeds)");
      seed = (uint64_t)d;
    }
    at::manual_seed(seed);  // CPU and every CUDA device
    return info.Env().Undefined();
  });
}

static Napi::Value GetRngState(const Napi::CallbackInfo& info) {
  return guard(info, "getRngState", [&]() -> Napi::Value {
    at::Generator gen = generatorFor(info[0]);
    std::lock_guard<std::mutex> lock(gen.mutex());
    return Napi::Number::New(info.Env(), insertTensor(info.Env(), gen.get_state()));
  });
}

static Napi::Value SetRngState(const Napi::CallbackInfo& info) {
  return guard(info, "setRngState", [&]() -> Napi::Value {
    at::Generator gen = generatorFor(info[0]);
    const at::Tensor& s = tensorAt(info.Env(), info[1]);
    if (s.scalar_type() != at::kByte || s.dim() != 1) throwTorch("RNG state must be a 1-D uint8 tensor", "E_DTYPE");
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(s);
    return info.Env().Undefined();
  });
}

// A huge count would make OpenMP try to start that many threads on the next parallel region.
constexpr int kMaxThreads = 1024;
static int threadCount(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) throwType(std::string(what) + " expects an integer");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 1) || d > kMaxThreads || d != (double)(int)d)
    throwRange(std::string(what) + ": n must be an integer in [1, " + std::to_string(kMaxThreads) + "]");
  return (int)d;
}

static Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  return guard(info, "setNumThreads", [&]() -> Napi::Value {
    int n = threadCount(info[0], "setNumThreads");
    at::set_num_threads(n);
    return info.Env().Undefined();
  });
}

static Napi::Value GetNumThreads(const Napi::CallbackInfo& info) {
  return guard(info, "getNumThreads", [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), at::get_num_threads());
  });
}

static Napi::Value SetNumInteropThreads(const Napi::CallbackInfo& info) {
  return guard(info, "setNumInteropThreads", [&]() -> Napi::Value {
    int n = threadCount(info[0], "setNumInteropThreads");
    at::set_num_interop_threads(n);  // throws if work already started on the pool
    return info.Env().Undefined();
  });
}

// glibc malloc's mmap and trim thresholds (mallopt). The policy lives in lib/torch/native.ts; this
// only applies it. Returns false where the C library is not glibc or glibc refuses the value.
static Napi::Value MallocTune(const Napi::CallbackInfo& info) {
  return guard(info, "mallocTune", [&]() -> Napi::Value {
    auto bytes = [&](size_t i, const char* what) -> int {
      double d = info[i].IsNumber() ? info[i].As<Napi::Number>().DoubleValue() : -1;
      if (!(d >= 0) || d > 2147483647.0 || d != (double)(int64_t)d)
        throwRange(std::string(what) + " must be an integer number of bytes in [0, 2^31)");
      return (int)d;
    };
    int mmapThreshold = bytes(0, "mmapThreshold");
    int trimThreshold = bytes(1, "trimThreshold");
#if defined(__GLIBC__)
    bool ok = mallopt(M_MMAP_THRESHOLD, mmapThreshold) == 1;
    ok = mallopt(M_TRIM_THRESHOLD, trimThreshold) == 1 && ok;
    return Napi::Boolean::New(info.Env(), ok);
#else
    (void)mmapThreshold;
    (void)trimThreshold;
    return Napi::Boolean::New(info.Env(), false);
#endif
  });
}

static Napi::Value ParallelInfo(const Napi::CallbackInfo& info) {
  return guard(info, "parallelInfo", [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), at::get_parallel_info());
  });
}

static Napi::Value CudaIsAvailable(const Napi::CallbackInfo& info) {
  return guard(info, "cudaIsAvailable", [&]() -> Napi::Value {
    return Napi::Boolean::New(info.Env(), torch::cuda::is_available());
  });
}

static Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) {
  return guard(info, "cudaDeviceCount", [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), (double)torch::cuda::device_count());
  });
}

static Napi::Value CudaSynchronize(const Napi::CallbackInfo& info) {
  return guard(info, "cuda.synchronize", [&]() -> Napi::Value {
    if (!torch::cuda::is_available()) throwTorch("CUDA is not available", "E_DEVICE");
    int64_t idx = info[0].IsNumber() ? info[0].As<Napi::Number>().Int64Value() : -1;
    torch::cuda::synchronize(idx);
    return info.Env().Undefined();
  });
}

static c10::DeviceType deviceTypeArg(const Napi::Value& v) {
  c10::Device d = deviceFrom(v);
  if (!d.is_cpu() && !d.is_cuda()) throwRange("autocast supports 'cpu' and 'cuda'", "E_DEVICE");
  return d.type();
}

// autocastEnter(device, dtype) -> [prevEnabled, prevDtype]; autocastExit(device, prevEnabled, prevDtype)
static Napi::Value AutocastEnter(const Napi::CallbackInfo& info) {
  return guard(info, "autocast", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    c10::DeviceType dev = deviceTypeArg(info[0]);
    c10::ScalarType dtype = scalarTypeFrom(info[1]);
    bool enabled = info[2].IsBoolean() ? info[2].As<Napi::Boolean>().Value() : true;
    if (dev == c10::DeviceType::CUDA && enabled && !torch::cuda::is_available())
      throwTorch("autocast on 'cuda' requested but CUDA is not available", "E_DEVICE");
    if (dev == c10::DeviceType::CPU && dtype != at::kBFloat16 && enabled)
      throwRange("CPU autocast supports only bfloat16", "E_DTYPE");
    auto prev = Napi::Array::New(env, 2);
    prev.Set(0u, compat::autocastEnabled(dev));
    prev.Set(1u, (int)compat::autocastDtype(dev));
    compat::setAutocastEnabled(dev, enabled);
    compat::setAutocastDtype(dev, dtype);
    at::autocast::increment_nesting();
    return prev;
  });
}

static Napi::Value AutocastExit(const Napi::CallbackInfo& info) {
  return guard(info, "autocast", [&]() -> Napi::Value {
    c10::DeviceType dev = deviceTypeArg(info[0]);
    // Arguments are read before any state changes, so a bad call leaves the state as it was.
    if (!info[1].IsBoolean()) throwType("autocastExit: expected the previous enabled flag");
    bool prevEnabled = info[1].As<Napi::Boolean>().Value();
    c10::ScalarType prevDtype = scalarTypeFrom(info[2]);
    // The cast cache lives as long as the outermost autocast region, like torch.autocast.__exit__.
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    compat::setAutocastEnabled(dev, prevEnabled);
    compat::setAutocastDtype(dev, prevDtype);
    return info.Env().Undefined();
  });
}

static Napi::Value AutocastState(const Napi::CallbackInfo& info) {
  return guard(info, "autocast", [&]() -> Napi::Value {
    c10::DeviceType dev = deviceTypeArg(info[0]);
    auto arr = Napi::Array::New(info.Env(), 2);
    arr.Set(0u, compat::autocastEnabled(dev));
    arr.Set(1u, (int)compat::autocastDtype(dev));
    return arr;
  });
}

// Forward-mode AD levels (Python's torch.autograd.forward_ad.enter_dual_level / exit_dual_level);
// dual tensors themselves are made and unpacked by the aten::_make_dual / aten::_unpack_dual ops.
static Napi::Value ForwardAdEnter(const Napi::CallbackInfo& info) {
  return guard(info, "forwardAd.enter", [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), (double)torch::autograd::ForwardADLevel::get_next_idx());
  });
}

static Napi::Value ForwardAdExit(const Napi::CallbackInfo& info) {
  return guard(info, "forwardAd.exit", [&]() -> Napi::Value {
    if (!info[0].IsNumber()) throwType("forwardAd.exit expects the level number");
    torch::autograd::ForwardADLevel::release_idx((uint64_t)info[0].As<Napi::Number>().Int64Value());
    return info.Env().Undefined();
  });
}

static Napi::Value SdpBackends(const Napi::CallbackInfo& info) {
  return guard(info, "sdpBackends", [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), compat::sdpBackends());
  });
}

static Napi::Value SetSdpBackends(const Napi::CallbackInfo& info) {
  return guard(info, "setSdpBackends", [&]() -> Napi::Value {
    if (!info[0].IsNumber()) throwType("setSdpBackends expects a bit mask");
    compat::setSdpBackends(info[0].As<Napi::Number>().Int32Value());
    return info.Env().Undefined();
  });
}

static Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  return guard(info, "buildInfo", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    auto o = Napi::Object::New(env);
    o.Set("torchVersion", TORCH_VERSION);
    o.Set("torchMajor", TORCH_VERSION_MAJOR);
    o.Set("torchMinor", TORCH_VERSION_MINOR);
    o.Set("sourceHash", TIM_SOURCE_HASH);
#ifdef TIM_WITH_CUDA
    o.Set("cudaBuild", true);
#else
    o.Set("cudaBuild", false);
#endif
    o.Set("napiVersion", NAPI_VERSION);
    return o;
  });
}

void registerState(Napi::Env env, Napi::Object exports) {
  exports.Set("manualSeed", Napi::Function::New(env, ManualSeed, "manualSeed"));
  exports.Set("getRngState", Napi::Function::New(env, GetRngState, "getRngState"));
  exports.Set("setRngState", Napi::Function::New(env, SetRngState, "setRngState"));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads, "setNumThreads"));
  exports.Set("getNumThreads", Napi::Function::New(env, GetNumThreads, "getNumThreads"));
  exports.Set("setNumInteropThreads", Napi::Function::New(env, SetNumInteropThreads, "setNumInteropThreads"));
  exports.Set("mallocTune", Napi::Function::New(env, MallocTune, "mallocTune"));
  exports.Set("parallelInfo", Napi::Function::New(env, ParallelInfo, "parallelInfo"));
  exports.Set("cudaIsAvailable", Napi::Function::New(env, CudaIsAvailable, "cudaIsAvailable"));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, CudaDeviceCount, "cudaDeviceCount"));
  exports.Set("cudaSynchronize", Napi::Function::New(env, CudaSynchronize, "cudaSynchronize"));
  exports.Set("autocastEnter", Napi::Function::New(env, AutocastEnter, "autocastEnter"));
  exports.Set("autocastExit", Napi::Function::New(env, AutocastExit, "autocastExit"));
  exports.Set("autocastState", Napi::Function::New(env, AutocastState, "autocastState"));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo, "buildInfo"));
  exports.Set("forwardAdEnter", Napi::Function::New(env, ForwardAdEnter, "forwardAdEnter"));
  exports.Set("forwardAdExit", Napi::Function::New(env, ForwardAdExit, "forwardAdExit"));
  exports.Set("sdpBackends", Napi::Function::New(env, SdpBackends, "sdpBackends"));
  exports.Set("setSdpBackends", Napi::Function::New(env, SetSdpBackends, "setSdpBackends"));
}

}  // namespace tim

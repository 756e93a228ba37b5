// The handle table: JS holds int32 handles, never pointers, so a stale or forged handle can only
// ever produce a clean E_DISPOSED error. Also the memory accounting behind torch.memory().
#include "common.h"
#include <mutex>
#include <thread>
#include <unordered_map>

namespace tim {
namespace {

std::vector<at::Tensor> g_slots;  // an undefined tensor marks a free slot
std::vector<int32_t> g_free;
int64_t g_live = 0;

// Views share storage: bytes are counted once per storage, with a reference count.
struct StorageUse {
  int64_t refs;
  int64_t bytes;
  bool cuda;
};
std::unordered_map<const void*, StorageUse> g_storages;
int64_t g_bytesCpu = 0, g_bytesCuda = 0;
int64_t g_reportedToV8 = 0;  // external memory last reported to V8 (batched: every 4 MiB)

void reportExternal(Napi::Env env) {
  int64_t delta = g_bytesCpu - g_reportedToV8;
  if (delta > (4 << 20) || delta < -(4 << 20)) {
    Napi::MemoryManagement::AdjustExternalMemory(env, delta);
    g_reportedToV8 = g_bytesCpu;
  }
}

void track(Napi::Env env, const at::Tensor& t, int sign) {
  if (!t.has_storage()) return;
  const auto& storage = t.storage();
  const void* key = storage.unsafeGetStorageImpl();
  if (sign > 0) {
    auto [it, fresh] = g_storages.try_emplace(key, StorageUse{0, (int64_t)storage.nbytes(), t.is_cuda()});
    if (it->second.refs++ == 0) {
      (it->second.cuda ? g_bytesCuda : g_bytesCpu) += it->second.bytes;
    }
  } else {
    auto it = g_storages.find(key);
    if (it == g_storages.end()) return;
    if (--it->second.refs == 0) {
      (it->second.cuda ? g_bytesCuda : g_bytesCpu) -= it->second.bytes;
      g_storages.erase(it);
    }
  }
  reportExternal(env);
}

// References to JS ArrayBuffers that back zero-copy tensors. The storage deleter may run on any
// thread; a napi_ref may only be deleted on the JS thread, so deleters queue them here.
std::mutex g_deferredMutex;
std::vector<napi_ref> g_deferred;

}  // namespace

int32_t insertTensor(Napi::Env env, at::Tensor t) {
  if (!t.defined()) return -1;
  track(env, t, +1);
  ++g_live;
  if (!g_free.empty()) {
    int32_t h = g_free.back();
    g_free.pop_back();
    g_slots[h] = std::move(t);
    return h;
  }
  if (g_slots.size() >= (size_t)INT32_MAX) throwRange("too many live tensors", "E_OOM");
  g_slots.push_back(std::move(t));
  return (int32_t)g_slots.size() - 1;
}

const at::Tensor* tryTensorAt(int32_t h) {
  if (h < 0 || (size_t)h >= g_slots.size() || !g_slots[h].defined()) return nullptr;
  return &g_slots[h];
}

const at::Tensor& tensorAt(Napi::Env env, const Napi::Value& v) {
  if (!v.IsNumber()) throwType("expected a Tensor");
  int32_t h = v.As<Napi::Number>().Int32Value();
  const at::Tensor* t = tryTensorAt(h);
  if (!t) throwTorch("tensor was disposed (use after dispose)", "E_DISPOSED");
  return *t;
}

bool freeTensor(Napi::Env env, int32_t h) {
  if (h < 0 || (size_t)h >= g_slots.size() || !g_slots[h].defined()) return false;
  track(env, g_slots[h], -1);
  g_slots[h] = at::Tensor();
  g_free.push_back(h);
  --g_live;
  return true;
}

void deferRelease(napi_ref ref) {
  std::lock_guard<std::mutex> lock(g_deferredMutex);
  g_deferred.push_back(ref);
}

void drainDeferredReleases(Napi::Env env) {
  std::vector<napi_ref> refs;
  {
    std::lock_guard<std::mutex> lock(g_deferredMutex);
    if (g_deferred.empty()) return;
    refs.swap(g_deferred);
  }
  for (napi_ref r : refs) napi_delete_reference(env, r);
}

static Napi::Value Free(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), freeTensor(info.Env(), info[0].As<Napi::Number>().Int32Value()));
}

// Frees every handle of an array: one call at the end of a scope instead of one per tensor.
static Napi::Value FreeMany(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto arr = info[0].As<Napi::Array>();
  uint32_t n = arr.Length(), freed = 0;
  for (uint32_t i = 0; i < n; ++i) {
    Napi::Value v = arr.Get(i);
    if (v.IsNumber() && freeTensor(env, v.As<Napi::Number>().Int32Value())) ++freed;
  }
  drainDeferredReleases(env);
  return Napi::Number::New(env, freed);
}

static Napi::Value IsLive(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), tryTensorAt(info[0].As<Napi::Number>().Int32Value()) != nullptr);
}

static Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  drainDeferredReleases(env);
  auto o = Napi::Object::New(env);
  o.Set("liveTensors", Napi::Number::New(env, (double)g_live));
  o.Set("cpu", Napi::Number::New(env, (double)g_bytesCpu));
  o.Set("cuda", Napi::Number::New(env, (double)g_bytesCuda));
  o.Set("storages", Napi::Number::New(env, (double)g_storages.size()));
  return o;
}

void registerHandles(Napi::Env env, Napi::Object exports) {
  exports.Set("free", Napi::Function::New(env, Free, "free"));
  exports.Set("freeMany", Napi::Function::New(env, FreeMany, "freeMany"));
  exports.Set("isLive", Napi::Function::New(env, IsLive, "isLive"));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats, "memoryStats"));
}

}  // namespace tim

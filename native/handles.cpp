// The handle table: JS holds int32 handles, never pointers, so a stale or forged handle can only
// ever produce a clean E_DISPOSED error. Also the memory accounting behind torch.memory().
#include "common.h"
#include <atomic>
#include <mutex>
#include <thread>
#include <unordered_map>

namespace tim {
namespace {

// A handle is `generation * kSlots + slot`. Each free bumps the slot's generation, so a stale handle
// (held by a FinalizationRegistry entry, a disposed Tensor, or forged from JS) never names the
// newer tensor that reuses its slot: it can only fail with E_DISPOSED. Handles stay below 2^53
// (exact JS numbers); the first 127 generations of every slot are still V8 small integers.
constexpr int64_t kSlotBits = 24;
constexpr int64_t kSlots = int64_t(1) << kSlotBits;   // at most 16M live tensors
constexpr int64_t kMaxGen = int64_t(1) << 29;          // kMaxGen * kSlots == 2^53

struct Slot {
  at::Tensor t;  // undefined marks a free slot
  int64_t gen = 0;
};
std::vector<Slot> g_slots;
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
std::atomic<bool> g_hasDeferred{false};  // lets free() skip the mutex when nothing is queued

}  // namespace

int64_t insertTensor(Napi::Env env, at::Tensor t) {
  if (!t.defined()) return -1;
  int32_t slot;
  if (!g_free.empty()) {
    slot = g_free.back();
    g_free.pop_back();
  } else {
    if ((int64_t)g_slots.size() >= kSlots) throwRange("too many live tensors (16M): dispose tensors or use torch.scope", "E_OOM");
    g_slots.emplace_back();
    slot = (int32_t)g_slots.size() - 1;
  }
  track(env, t, +1);
  ++g_live;
  Slot& s = g_slots[slot];
  s.t = std::move(t);
  return s.gen * kSlots + slot;
}

int64_t handleFrom(const Napi::Value& v) {
  if (!v.IsNumber()) return -1;
  double d = v.As<Napi::Number>().DoubleValue();
  // NaN, fractions and out-of-range numbers are not handles (Int32Value would map NaN to slot 0).
  if (!(d >= 0) || d >= 9007199254740992.0 || d != (double)(int64_t)d) return -1;
  return (int64_t)d;
}

const at::Tensor* tryTensorAt(int64_t h) {
  if (h < 0) return nullptr;
  int64_t slot = h & (kSlots - 1), gen = h >> kSlotBits;
  if (slot >= (int64_t)g_slots.size()) return nullptr;
  const Slot& s = g_slots[slot];
  if (s.gen != gen || !s.t.defined()) return nullptr;
  return &s.t;
}

const at::Tensor& tensorAt(Napi::Env env, const Napi::Value& v) {
  if (!v.IsNumber()) throwType("expected a Tensor");
  const at::Tensor* t = tryTensorAt(handleFrom(v));
  if (!t) throwTorch("tensor was disposed (use after dispose)", "E_DISPOSED");
  return *t;
}

bool freeTensor(Napi::Env env, int64_t h) {
  if (!tryTensorAt(h)) return false;
  int32_t slot = (int32_t)(h & (kSlots - 1));
  Slot& s = g_slots[slot];
  track(env, s.t, -1);
  at::Tensor dying = std::move(s.t);  // released after the table is consistent again
  s.t = at::Tensor();
  --g_live;
  // A slot whose generation would leave the exact-integer range is retired, never reused.
  if (++s.gen < kMaxGen) g_free.push_back(slot);
  return true;
}

void deferRelease(napi_ref ref) {
  std::lock_guard<std::mutex> lock(g_deferredMutex);
  g_deferred.push_back(ref);
  g_hasDeferred.store(true, std::memory_order_relaxed);
}

void drainDeferredReleases(Napi::Env env) {
  std::vector<napi_ref> refs;
  {
    std::lock_guard<std::mutex> lock(g_deferredMutex);
    g_hasDeferred.store(false, std::memory_order_relaxed);
    if (g_deferred.empty()) return;
    refs.swap(g_deferred);
  }
  for (napi_ref r : refs) napi_delete_reference(env, r);
}

// free(h) -> whether it freed something: false for stale, foreign or already-freed handles.
static Napi::Value Free(const Napi::CallbackInfo& info) {
  return guard(info, "free", [&]() -> Napi::Value {
    bool freed = freeTensor(info.Env(), handleFrom(info[0]));
    if (g_hasDeferred.load(std::memory_order_relaxed)) drainDeferredReleases(info.Env());
    return Napi::Boolean::New(info.Env(), freed);
  });
}

// Frees every handle of an array: one call at the end of a scope instead of one per tensor.
static Napi::Value FreeMany(const Napi::CallbackInfo& info) {
  return guard(info, "freeMany", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    if (!info[0].IsArray()) throwType("freeMany expects an array of handles");
    auto arr = info[0].As<Napi::Array>();
    uint32_t n = arr.Length(), freed = 0;
    for (uint32_t i = 0; i < n; ++i)
      if (freeTensor(env, handleFrom(arr.Get(i)))) ++freed;
    drainDeferredReleases(env);
    return Napi::Number::New(env, freed);
  });
}

static Napi::Value IsLive(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), tryTensorAt(handleFrom(info[0])) != nullptr);
}

static Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  drainDeferredReleases(env);
  auto o = Napi::Object::New(env);
  o.Set("liveTensors", Napi::Number::New(env, (double)g_live));
  o.Set("cpu", Napi::Number::New(env, (double)g_bytesCpu));
  o.Set("cuda", Napi::Number::New(env, (double)g_bytesCuda));
  o.Set("storages", Napi::Number::New(env, (double)g_storages.size()));
  // What V8 was told (it schedules GC by it): our share, and V8's total external memory.
  o.Set("reportedToV8", Napi::Number::New(env, (double)g_reportedToV8));
  o.Set("v8External", Napi::Number::New(env, (double)Napi::MemoryManagement::AdjustExternalMemory(env, 0)));
  return o;
}

void registerHandles(Napi::Env env, Napi::Object exports) {
  exports.Set("free", Napi::Function::New(env, Free, "free"));
  exports.Set("freeMany", Napi::Function::New(env, FreeMany, "freeMany"));
  exports.Set("isLive", Napi::Function::New(env, IsLive, "isLive"));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats, "memoryStats"));
}

}  // namespace tim

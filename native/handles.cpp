// Tensors in the handle table (handle_table.h): JS holds numbers, never pointers, so a stale or
// forged handle can only ever produce a clean E_DISPOSED error. Also the memory accounting behind
// torch.memory().
#include "handle_table.h"
#include <atomic>
#include <mutex>
#include <thread>

namespace tim {
namespace {

HandleTable<at::Tensor> g_tensors("too many live tensors (16M): dispose tensors or use torch.scope");

// Views share storage: bytes are counted once per storage, with a reference count. Open addressing
// keyed by the StorageImpl pointer (linear probing, backward-shift deletion): unlike a node-based
// std::unordered_map, adding and dropping a tensor allocates nothing (this runs for every op result).
class StorageUses {
 public:
  struct Use {
    const void* key;
    int64_t refs;
    int64_t bytes;
    bool cuda;
  };
  StorageUses() { rehash(1024); }
  size_t size() const { return n_; }
  // The entry of `key`, made with refs == 0 when new.
  Use& acquire(const void* key, int64_t bytes, bool cuda) {
    if ((n_ + 1) * 4 > slots_.size() * 3) rehash(slots_.size() * 2);
    size_t i = home(key);
    while (slots_[i].key && slots_[i].key != key) i = (i + 1) & mask_;
    if (!slots_[i].key) {
      slots_[i] = Use{key, 0, bytes, cuda};
      ++n_;
    }
    return slots_[i];
  }
  Use* find(const void* key) {
    for (size_t i = home(key);; i = (i + 1) & mask_) {
      if (!slots_[i].key) return nullptr;
      if (slots_[i].key == key) return &slots_[i];
    }
  }
  void erase(Use* u) {
    size_t i = (size_t)(u - slots_.data());
    for (size_t j = (i + 1) & mask_; slots_[j].key; j = (j + 1) & mask_) {
      // an entry may fill the hole at i unless its home lies cyclically in (i, j]
      if (((j - home(slots_[j].key)) & mask_) >= ((j - i) & mask_)) {
        slots_[i] = slots_[j];
        i = j;
      }
    }
    slots_[i].key = nullptr;
    --n_;
  }

 private:
  size_t home(const void* k) const {
    return (size_t)((reinterpret_cast<uint64_t>(k) * 0x9E3779B97F4A7C15ull) >> shift_);
  }
  void rehash(size_t cap) {
    std::vector<Use> old = std::move(slots_);
    slots_.assign(cap, Use{nullptr, 0, 0, false});
    mask_ = cap - 1;
    shift_ = 64;
    for (size_t c = cap; c > 1; c >>= 1) --shift_;
    n_ = 0;
    for (const Use& u : old)
      if (u.key) acquire(u.key, u.bytes, u.cuda).refs = u.refs;
  }
  std::vector<Use> slots_;
  size_t mask_ = 0, n_ = 0;
  int shift_ = 64;
};
StorageUses g_storages;
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
    auto& use = g_storages.acquire(key, (int64_t)storage.nbytes(), t.is_cuda());
    if (use.refs++ == 0) (use.cuda ? g_bytesCuda : g_bytesCpu) += use.bytes;
  } else {
    auto* use = g_storages.find(key);
    if (!use) return;
    if (--use->refs == 0) {
      (use->cuda ? g_bytesCuda : g_bytesCpu) -= use->bytes;
      g_storages.erase(use);
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
  track(env, t, +1);
  return g_tensors.insert(std::move(t));
}

int64_t handleFrom(const Napi::Value& v) {
  // One napi call: it fails (napi_number_expected) for anything that is not a number.
  double d;
  if (napi_get_value_double(v.Env(), v, &d) != napi_ok) return -1;
  // NaN, fractions and out-of-range numbers are not handles (Int32Value would map NaN to slot 0).
  if (!(d >= 0) || d >= 9007199254740992.0 || d != (double)(int64_t)d) return -1;
  return (int64_t)d;
}

const at::Tensor* tryTensorAt(int64_t h) { return g_tensors.find(h); }

const at::Tensor& tensorAt(Napi::Env env, const Napi::Value& v) {
  double d;
  if (napi_get_value_double(env, v, &d) != napi_ok) throwType("expected a Tensor");
  const at::Tensor* t = (d >= 0 && d < 9007199254740992.0 && d == (double)(int64_t)d) ? g_tensors.find((int64_t)d) : nullptr;
  if (!t) throwTorch("tensor was disposed (use after dispose)", "E_DISPOSED");
  return *t;
}

bool freeTensor(Napi::Env env, int64_t h) {
  const at::Tensor* t = g_tensors.find(h);
  if (!t) return false;
  track(env, *t, -1);
  std::optional<at::Tensor> dying = g_tensors.remove(h);  // released after the table is consistent again
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

// Frees every handle of an array (or a Float64Array): one call at the end of a scope instead of
// one per tensor. The typed array is read in place, without a napi call per element.
static Napi::Value FreeMany(const Napi::CallbackInfo& info) {
  return guard(info, "freeMany", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    uint32_t freed = 0;
    if (info[0].IsTypedArray() && info[0].As<Napi::TypedArray>().TypedArrayType() == napi_float64_array) {
      auto ta = info[0].As<Napi::Float64Array>();
      const double* hs = ta.Data();
      for (size_t i = 0, n = ta.ElementLength(); i < n; ++i) {
        double d = hs[i];
        if (d >= 0 && d < 9007199254740992.0 && d == (double)(int64_t)d && freeTensor(env, (int64_t)d)) ++freed;
      }
    } else {
      if (!info[0].IsArray()) throwType("freeMany expects an array of handles");
      auto arr = info[0].As<Napi::Array>();
      uint32_t n = arr.Length();
      for (uint32_t i = 0; i < n; ++i)
        if (freeTensor(env, handleFrom(arr.Get(i)))) ++freed;
    }
    drainDeferredReleases(env);
    return Napi::Number::New(env, freed);
  });
}

static Napi::Value IsLive(const Napi::CallbackInfo& info) {
  return guard(info, "isLive", [&]() -> Napi::Value {
    return Napi::Boolean::New(info.Env(), tryTensorAt(handleFrom(info[0])) != nullptr);
  });
}

static Napi::Value MemoryStats(const Napi::CallbackInfo& info) {
  return guard(info, "memoryStats", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    drainDeferredReleases(env);
    auto o = Napi::Object::New(env);
    o.Set("liveTensors", Napi::Number::New(env, (double)g_tensors.live()));
    o.Set("cpu", Napi::Number::New(env, (double)g_bytesCpu));
    o.Set("cuda", Napi::Number::New(env, (double)g_bytesCuda));
    o.Set("storages", Napi::Number::New(env, (double)g_storages.size()));
    // What V8 was told (it schedules GC by it): our share, and V8's total external memory.
    o.Set("reportedToV8", Napi::Number::New(env, (double)g_reportedToV8));
    o.Set("v8External", Napi::Number::New(env, (double)Napi::MemoryManagement::AdjustExternalMemory(env, 0)));
    return o;
  });
}

void registerHandles(Napi::Env env, Napi::Object exports) {
  exports.Set("free", Napi::Function::New(env, Free, "free"));
  exports.Set("freeMany", Napi::Function::New(env, FreeMany, "freeMany"));
  exports.Set("isLive", Napi::Function::New(env, IsLive, "isLive"));
  exports.Set("memoryStats", Napi::Function::New(env, MemoryStats, "memoryStats"));
}

}  // namespace tim

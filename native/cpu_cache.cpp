// A caching allocator for large CPU tensor buffers, the CPU counterpart of PyTorch's CUDA caching
// allocator. The policy (whether to install it, the block size it starts at) lives in
// lib/torch/cpu_cache.ts; this file only implements it.
//
// Why (docs/memory.md, "Training-step memory"): a training step allocates and frees gigabytes of
// activations in 1-32 MiB blocks. From glibc's heap, those freed blocks are kept but the heap still
// grows step after step (blocks that outlive a step pin its top, the next step's requests do not
// fit the holes): 3.0 -> 5.4 -> 6.7 GB of RSS for 0.2 GB in use. Served by mmap instead, nothing is
// kept, but every block is page-faulted (and zeroed by the kernel) again on every use.
// Here a block of `minBytes` or more is mmapped once and, when its tensor is freed, kept for the
// next request of (nearly) its size: a training step that repeats the previous one's shapes reuses
// every block without a fault, and what is reserved stays near the peak in use.
//
// Blocks smaller than minBytes go to the allocator that was installed before (c10's default).
// Eviction: before a new block is mapped, cached blocks are unmapped, least recently freed first,
// while the reserved total would pass (1 + slack) x the peak in use (so a change of shapes, e.g.
// sampling after training, does not add a second working set). The same slack bounds how much larger
// than a request a reused block may be; lib/torch/cpu_cache.ts chooses it. `trim(maxCached)` unmaps them, least recently
// freed first, until at most maxCached bytes stay cached: the trainer calls it between steps with a
// budget chosen in lib/torch/cpu_cache.ts (memory held between steps vs page faults in the next one).
// Blocks of `hugeBytes` or more (0: none) start on a 2 MiB boundary and are madvise(MADV_HUGEPAGE)d:
// where the kernel's transparent huge pages are in 'madvise' mode (Debian's default), a block that is
// page-faulted again after a trim then costs one fault per 2 MiB instead of 512 (~0.1 instead of
// ~0.55 ms per MiB on the machines measured, docs/memory.md).
#include "common.h"
#include "compat.h"

#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>

#include <atomic>
#include <cstring>
#include <list>
#include <map>
#include <mutex>
#include <unordered_map>

namespace tim {
namespace {

constexpr size_t kPage = 4096;
constexpr size_t kHugePage = size_t(2) << 20;

class CpuCache final : public compat::AllocatorBase {
 public:
  struct Stats {
    size_t inUse = 0, cached = 0, peakInUse = 0, peakReserved = 0;
    uint64_t hits = 0, misses = 0, mapped = 0, unmapped = 0, hugeMapped = 0;
  };

  void install(size_t minBytes, double slack, size_t hugeBytes) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!base_) base_ = c10::GetCPUAllocator();
    slack_ = slack;
    hugeBytes_ = hugeBytes;
    minBytes_.store(minBytes, std::memory_order_relaxed);
    installed_.store(true, std::memory_order_release);
    c10::SetCPUAllocator(this, /*priority=*/1);
  }
  bool installed() const { return installed_.load(std::memory_order_acquire); }

  c10::DataPtr allocateBlock(size_t n) override {
    // base_ is set before this allocator is installed and never changes after
    if (n < minBytes_.load(std::memory_order_relaxed)) return base_->allocate(n);
    void* p = take((n + kPage - 1) / kPage * kPage);
    return {p, p, &CpuCache::release, c10::Device(c10::DeviceType::CPU)};
  }
  // raw_allocate() pairs with this; it only sees blocks this allocator made (a small block's DataPtr
  // carries base_'s own deleter)
  c10::DeleterFnPtr raw_deleter() const override { return &CpuCache::release; }

  Stats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }
  void resetPeaks() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peakInUse = stats_.inUse;
    stats_.peakReserved = stats_.inUse + stats_.cached;
  }
  // Unmaps cached blocks, least recently freed first, until at most maxCached bytes stay cached;
  // returns the bytes unmapped.
  size_t trim(size_t maxCached) {
    std::lock_guard<std::mutex> lock(mu_);
    size_t before = stats_.cached;
    while (!lru_.empty() && stats_.cached > maxCached) evictOldest();
    return before - stats_.cached;
  }

  static CpuCache& instance() {
    static CpuCache* c = new CpuCache();  // never destroyed: blocks may be freed during exit
    return *c;
  }

 private:
  struct Free {
    void* p;
    size_t size;
  };
  using Lru = std::list<Free>;

  void* take(size_t size) {
    std::lock_guard<std::mutex> lock(mu_);
    // the smallest cached block that fits, if it wastes at most `slack` of the request
    auto it = bySize_.lower_bound(size);
    if (it != bySize_.end() && it->first <= size + (size_t)((double)size * slack_)) {
      Lru::iterator f = it->second;
      void* p = f->p;
      size_t got = f->size;
      bySize_.erase(it);
      lru_.erase(f);
      stats_.cached -= got;
      live_[p] = got;
      stats_.inUse += got;
      stats_.hits++;
      notePeaks();
      return p;
    }
    stats_.misses++;
    size_t peak = std::max(stats_.peakInUse, stats_.inUse + size);
    while (!lru_.empty() && stats_.inUse + stats_.cached + size > peak + (size_t)((double)peak * slack_)) evictOldest();
    void* p = map(size);
    if (p == MAP_FAILED) {
      // out of address space or memory: give everything cached back and try once more
      while (!lru_.empty()) evictOldest();
      p = map(size);
      if (p == MAP_FAILED) throw c10::Error({__func__, __FILE__, static_cast<uint32_t>(__LINE__)},
                                            "DefaultCPUAllocator: can't allocate memory: you tried to allocate " +
                                                std::to_string(size) + " bytes (the CPU block cache could not map it)");
    }
    stats_.mapped++;
    live_[p] = size;
    stats_.inUse += size;
    notePeaks();
    return p;
  }

  // A fresh mapping of `size` bytes; a huge block is carved 2 MiB-aligned out of a larger mapping
  // (the unaligned head and tail are unmapped again, so munmap(p, size) frees exactly what is left)
  void* map(size_t size) {
    if (hugeBytes_ == 0 || size < hugeBytes_) return mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t span = size + kHugePage - kPage;
    void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return raw;
    uintptr_t start = reinterpret_cast<uintptr_t>(raw);
    uintptr_t aligned = (start + kHugePage - 1) & ~(uintptr_t)(kHugePage - 1);
    if (aligned > start) munmap(raw, aligned - start);
    size_t tail = (start + span) - (aligned + size);
    if (tail > 0) munmap(reinterpret_cast<void*>(aligned + size), tail);
    void* p = reinterpret_cast<void*>(aligned);
    madvise(p, size, MADV_HUGEPAGE);  // a hint: fails harmlessly where the kernel has no THP
    stats_.hugeMapped++;
    return p;
  }

  static void release(void* p) { instance().put(p); }

  void put(void* p) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) return;  // not ours (cannot happen: only our DataPtrs carry this deleter)
    size_t size = it->second;
    live_.erase(it);
    stats_.inUse -= size;
    lru_.push_back({p, size});
    bySize_.emplace(size, std::prev(lru_.end()));
    stats_.cached += size;
  }

  void evictOldest() {
    Free f = lru_.front();
    auto range = bySize_.equal_range(f.size);
    for (auto it = range.first; it != range.second; ++it) {
      if (it->second == lru_.begin()) {
        bySize_.erase(it);
        break;
      }
    }
    lru_.pop_front();
    munmap(f.p, f.size);
    stats_.cached -= f.size;
    stats_.unmapped++;
  }

  void notePeaks() {
    stats_.peakInUse = std::max(stats_.peakInUse, stats_.inUse);
    stats_.peakReserved = std::max(stats_.peakReserved, stats_.inUse + stats_.cached);
  }

  std::mutex mu_;
  c10::Allocator* base_ = nullptr;
  std::atomic<size_t> minBytes_{SIZE_MAX};  // read on every allocation without the lock
  double slack_ = 0.25;                     // under mu_
  size_t hugeBytes_ = 0;                    // under mu_
  std::atomic<bool> installed_{false};
  std::unordered_map<void*, size_t> live_;
  Lru lru_;                                         // cached blocks, least recently freed first
  std::multimap<size_t, Lru::iterator> bySize_;     // the same blocks by size
  Stats stats_;
};

// cpuCacheInstall(minBytes, slack, hugeBytes): serve CPU blocks of minBytes or more from the cache,
// reusing a block up to (1 + slack) x a request's size and reserving up to (1 + slack) x the peak in
// use; blocks of hugeBytes or more (0: none) are 2 MiB-aligned and advised to use huge pages.
// Once installed it stays (blocks it handed out are freed through it); a second call changes the
// settings only.
Napi::Value Install(const Napi::CallbackInfo& info) {
  return guard(info, "cpuCacheInstall", [&]() -> Napi::Value {
    double d = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= kPage) || d > 9007199254740991.0 || d != (double)(int64_t)d)
      throwRange("cpuCacheInstall: minBytes must be an integer number of bytes >= 4096");
    double slack = info[1].IsNumber() ? info[1].As<Napi::Number>().DoubleValue() : -1;
    if (!(slack >= 0 && slack <= 4)) throwRange("cpuCacheInstall: slack must be a number in [0, 4]");
    double huge = info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : -1;
    if (!(huge == 0 || huge >= (double)kHugePage) || huge > 9007199254740991.0 || huge != (double)(int64_t)huge)
      throwRange("cpuCacheInstall: hugeBytes must be 0 or an integer number of bytes >= 2 MiB");
    CpuCache::instance().install((size_t)d, slack, (size_t)huge);
    return info.Env().Undefined();
  });
}

Napi::Value statsObject(Napi::Env env);

Napi::Value StatsJs(const Napi::CallbackInfo& info) {
  return guard(info, "cpuCacheStats", [&]() -> Napi::Value { return statsObject(info.Env()); });
}

Napi::Value statsObject(Napi::Env env) {
  auto& c = CpuCache::instance();
  CpuCache::Stats s = c.stats();
  Napi::Object o = Napi::Object::New(env);
  o.Set("installed", Napi::Boolean::New(env, c.installed()));
  o.Set("inUseBytes", Napi::Number::New(env, (double)s.inUse));
  o.Set("cachedBytes", Napi::Number::New(env, (double)s.cached));
  o.Set("peakInUseBytes", Napi::Number::New(env, (double)s.peakInUse));
  o.Set("peakReservedBytes", Napi::Number::New(env, (double)s.peakReserved));
  o.Set("hits", Napi::Number::New(env, (double)s.hits));
  o.Set("misses", Napi::Number::New(env, (double)s.misses));
  o.Set("mapped", Napi::Number::New(env, (double)s.mapped));
  o.Set("unmapped", Napi::Number::New(env, (double)s.unmapped));
  o.Set("hugeMapped", Napi::Number::New(env, (double)s.hugeMapped));
  return o;
}

// cpuCacheTrim(maxCachedBytes) -> bytes unmapped
Napi::Value Trim(const Napi::CallbackInfo& info) {
  return guard(info, "cpuCacheTrim", [&]() -> Napi::Value {
    double d = info[0].IsNumber() ? info[0].As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0) || d > 9007199254740991.0 || d != (double)(int64_t)d)
      throwRange("cpuCacheTrim: maxCachedBytes must be an integer number of bytes >= 0");
    return Napi::Number::New(info.Env(), (double)CpuCache::instance().trim((size_t)d));
  });
}

Napi::Value ResetPeaks(const Napi::CallbackInfo& info) {
  return guard(info, "cpuCacheResetPeaks", [&]() -> Napi::Value {
    CpuCache::instance().resetPeaks();
    return info.Env().Undefined();
  });
}

}  // namespace

void registerCpuCache(Napi::Env env, Napi::Object exports) {
  exports.Set("cpuCacheInstall", Napi::Function::New(env, Install, "cpuCacheInstall"));
  exports.Set("cpuCacheStats", Napi::Function::New(env, StatsJs, "cpuCacheStats"));
  exports.Set("cpuCacheTrim", Napi::Function::New(env, Trim, "cpuCacheTrim"));
  exports.Set("cpuCacheResetPeaks", Napi::Function::New(env, ResetPeaks, "cpuCacheResetPeaks"));
}

}  // namespace tim

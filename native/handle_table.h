// The one table behind every native object JS can name (tensors in handles.cpp, TorchScript modules
// in jit.cpp). JS never holds a pointer: it holds a handle, a plain JS number
// `generation * 2^kSlotBits + slot`. Each removal bumps the slot's generation, so a stale handle (a
// disposed object, a FinalizationRegistry entry that runs late, a number forged in JS) never names
// the newer object that reuses the slot: lookups of it fail, and callers turn that into E_DISPOSED.
// Handles stay below 2^53 (exact JS numbers); the first 127 generations of a slot are V8 small
// integers. Single-threaded: only the JS thread touches a table.
#pragma once
#include "common.h"
#include <optional>
#include <utility>
#include <vector>

namespace tim {

template <typename T>
class HandleTable {
 public:
  static constexpr int64_t kSlotBits = 24;
  static constexpr int64_t kSlots = int64_t(1) << kSlotBits;  // at most 16M live objects
  static constexpr int64_t kMaxGen = int64_t(1) << 29;         // kMaxGen * kSlots == 2^53

  // `full` is the E_OOM RangeError message when every slot is taken.
  explicit HandleTable(const char* full) : full_(full) {}

  int64_t insert(T value) {
    int64_t slot;
    if (!free_.empty()) {
      slot = free_.back();
      free_.pop_back();
    } else {
      if ((int64_t)slots_.size() >= kSlots) throwRange(full_, "E_OOM");
      slots_.emplace_back();
      slot = (int64_t)slots_.size() - 1;
    }
    Slot& s = slots_[(size_t)slot];
    s.value = std::move(value);
    ++live_;
    return s.gen * kSlots + slot;
  }

  // The live object a handle names, or nullptr (negative, stale, removed or never issued).
  T* find(int64_t h) {
    if (h < 0) return nullptr;
    int64_t slot = h & (kSlots - 1);
    if (slot >= (int64_t)slots_.size()) return nullptr;
    Slot& s = slots_[(size_t)slot];
    if (s.gen != (h >> kSlotBits) || !s.value) return nullptr;
    return &*s.value;
  }

  // Takes the object out (the caller lets it go once its own bookkeeping is consistent again);
  // nullopt when the handle names nothing live.
  std::optional<T> remove(int64_t h) {
    if (!find(h)) return std::nullopt;
    int64_t slot = h & (kSlots - 1);
    Slot& s = slots_[(size_t)slot];
    std::optional<T> out = std::move(s.value);
    s.value.reset();
    --live_;
    // A slot whose generation would leave the exact-integer range is retired, never reused.
    if (++s.gen < kMaxGen) free_.push_back(slot);
    return out;
  }

  int64_t live() const { return live_; }

 private:
  struct Slot {
    std::optional<T> value;  // empty marks a free slot
    int64_t gen = 0;
  };
  std::vector<Slot> slots_;
  std::vector<int64_t> free_;
  int64_t live_ = 0;
  const char* full_;
};

}  // namespace tim

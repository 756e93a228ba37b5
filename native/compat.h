// Every difference between libtorch 1.13 (Debian's default) and 2.x lives here, so the rest of
// native/ is written once against one API.
#pragma once
#include <torch/version.h>
#include <ATen/autocast_mode.h>
#include <ATen/Context.h>
#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>
#include <c10/core/Allocator.h>
#include <cstring>

#define TIM_TORCH_AT_LEAST(maj, min) \
  (TORCH_VERSION_MAJOR > (maj) || (TORCH_VERSION_MAJOR == (maj) && TORCH_VERSION_MINOR >= (min)))

// c10d (native/distributed.cpp): 2.0 split the ProcessGroup front end from the per-device Backend
// that ProcessGroupGloo / ProcessGroupNCCL derive from; collectives are called on that class.
#if TIM_TORCH_AT_LEAST(2, 0)
#define TIM_C10D_BACKEND ::c10d::Backend
#else
#define TIM_C10D_BACKEND ::c10d::ProcessGroup
#endif

namespace tim::compat {

// Autocast state: 2.4 made it per device type (set_autocast_enabled(device, on)); before, CPU and
// CUDA had separate functions.
inline bool autocastEnabled(c10::DeviceType device) {
#if TIM_TORCH_AT_LEAST(2, 4)
  return at::autocast::is_autocast_enabled(device);
#else
  return device == c10::DeviceType::CPU ? at::autocast::is_cpu_enabled() : at::autocast::is_enabled();
#endif
}

inline void setAutocastEnabled(c10::DeviceType device, bool enabled) {
#if TIM_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_enabled(device, enabled);
#else
  if (device == c10::DeviceType::CPU) at::autocast::set_cpu_enabled(enabled);
  else at::autocast::set_enabled(enabled);
#endif
}

inline c10::ScalarType autocastDtype(c10::DeviceType device) {
#if TIM_TORCH_AT_LEAST(2, 4)
  return at::autocast::get_autocast_dtype(device);
#else
  return device == c10::DeviceType::CPU ? at::autocast::get_autocast_cpu_dtype()
                                        : at::autocast::get_autocast_gpu_dtype();
#endif
}

inline void setAutocastDtype(c10::DeviceType device, c10::ScalarType dtype) {
#if TIM_TORCH_AT_LEAST(2, 4)
  at::autocast::set_autocast_dtype(device, dtype);
#else
  if (device == c10::DeviceType::CPU) at::autocast::set_autocast_cpu_dtype(dtype);
  else at::autocast::set_autocast_gpu_dtype(dtype);
#endif
}

// Scaled-dot-product attention backends, as a bit mask (kSdp*). 2.0 added the switches; the
// cuDNN kernel came in 2.3. The fused kernels have neither forward-mode AD nor a double backward;
// with them off, aten::scaled_dot_product_attention takes its composite math path, which has both
// (what Python's torch.nn.attention.sdpa_kernel(SDPBackend.MATH) does). 1.13 has no such op: 0.
constexpr int kSdpMath = 1, kSdpFlash = 2, kSdpMemEfficient = 4, kSdpCuDNN = 8;

inline int sdpBackends() {
  int m = 0;
#if TIM_TORCH_AT_LEAST(2, 0)
  auto& c = at::globalContext();
  if (c.userEnabledMathSDP()) m |= kSdpMath;
  if (c.userEnabledFlashSDP()) m |= kSdpFlash;
  if (c.userEnabledMemEfficientSDP()) m |= kSdpMemEfficient;
#if TIM_TORCH_AT_LEAST(2, 3)
  if (c.userEnabledCuDNNSDP()) m |= kSdpCuDNN;
#endif
#endif
  return m;
}

inline void setSdpBackends(int m) {
#if TIM_TORCH_AT_LEAST(2, 0)
  auto& c = at::globalContext();
  c.setSDPUseMath(m & kSdpMath);
  c.setSDPUseFlash(m & kSdpFlash);
  c.setSDPUseMemEfficient(m & kSdpMemEfficient);
#if TIM_TORCH_AT_LEAST(2, 3)
  c.setSDPUseCuDNN(m & kSdpCuDNN);
#endif
#else
  (void)m;
#endif
}

// c10::Allocator (native/cpu_cache.cpp): 1.13 declares `DataPtr allocate(size_t) const`; 2.x made it
// non-const and added a pure virtual `copy_data`. An allocator derives from this and implements
// allocateBlock(); whichever `allocate` the linked libtorch declares virtual is the one overridden.
struct AllocatorBase : c10::Allocator {
  virtual c10::DataPtr allocateBlock(size_t n) = 0;
  c10::DataPtr allocate(size_t n) const { return const_cast<AllocatorBase*>(this)->allocateBlock(n); }
  c10::DataPtr allocate(size_t n) { return allocateBlock(n); }
  void copy_data(void* dest, const void* src, std::size_t count) const { std::memcpy(dest, src, count); }
};

}  // namespace tim::compat

// Addon entry: each native/*.cpp registers its functions on the exports object.
#include "common.h"

namespace tim {
static bool g_loaded = false;

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // The handle table is process-global: a second JS environment (worker_threads) would share it.
  if (g_loaded) {
    Napi::Error::New(env, "tim-torch's native addon can be used from one JS thread per process (the main thread)")
        .ThrowAsJavaScriptException();
    return exports;
  }
  g_loaded = true;
  registerHandles(env, exports);
  registerErrors(env, exports);
  registerTensor(env, exports);
  registerOps(env, exports);
  registerAutograd(env, exports);
  registerState(env, exports);
  registerJit(env, exports);
  registerSafetensors(env, exports);
  registerDistributed(env, exports);
  registerCpuCache(env, exports);
  return exports;
}
}  // namespace tim

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return tim::Init(env, exports); }

NODE_API_MODULE(tim_torch, InitAddon)

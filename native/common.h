// Shared declarations of the addon: the handle table, the error funnel and the registration hooks
// of each native/*.cpp file.
#pragma once
#include <napi.h>
#include <ATen/ATen.h>
#include <ATen/core/ivalue.h>
#include <string>
#include <vector>

namespace torch::jit {
struct Module;
}

namespace tim {

// ---- tensor handles (handles.cpp, over the HandleTable of handle_table.h) --------------------
// JS never holds a pointer: a tensor is a number naming a slot of the table plus the slot's
// generation (a stale handle never names a newer tensor). Freeing is explicit (dispose / scopes);
// handles.cpp keeps live-tensor and per-device byte statistics.
int64_t insertTensor(Napi::Env env, at::Tensor t);                  // -1 for an undefined tensor
const at::Tensor& tensorAt(Napi::Env env, const Napi::Value& v);   // throws E_DISPOSED / TypeError
int64_t handleFrom(const Napi::Value& v);                           // -1 when v cannot be a handle
const at::Tensor* tryTensorAt(int64_t h);                           // nullptr when not live
bool freeTensor(Napi::Env env, int64_t h);
void drainDeferredReleases(Napi::Env env);
void deferRelease(napi_ref ref);                                     // any thread
// TorchScript module handles (jit.cpp, the same HandleTable): module results of TorchScript methods.
int64_t insertModule(const torch::jit::Module& m);

// ---- errors (errors.cpp) ---------------------------------------------------------------------
// Every entry point runs its body inside guard(): a c10::Error (or std::exception) becomes a JS
// TorchError with a `code`; JS-side mistakes found here become TypeError/RangeError.
struct JsError {
  enum Kind { Type, Range, Torch } kind;
  std::string code;
  std::string message;
};
[[noreturn]] void throwType(const std::string& msg, const std::string& code = "E_ARG");
[[noreturn]] void throwRange(const std::string& msg, const std::string& code = "E_RANGE");
[[noreturn]] void throwTorch(const std::string& msg, const std::string& code);
void setErrorClasses(Napi::Env env, Napi::Function torchError);
Napi::Value raise(Napi::Env env, const JsError& e);
JsError translate(std::exception_ptr ep, const std::string& context);
std::string describeTensor(const at::Tensor& t);
// An exception's message without libtorch's backtrace and boilerplate, for callers that re-throw
// it with their own code (e.g. E_FORMAT for an unreadable archive).
std::string messageOf(const std::exception& e);
// Rethrows an error raised by a failed napi call (e.g. a string where a number was expected),
// adding code E_ARG when it has none, so every error that reaches JS carries a code.
void rethrowWithCode(const Napi::Error& e);

// The context that prefixes an error message: a string, or a function that builds it (called only
// when the call failed, so a hot path such as an op call pays nothing for a rich description).
inline std::string contextOf(const char* what) { return what; }
inline std::string contextOf(const std::string& what) { return what; }
template <typename F, typename = decltype(std::declval<F&>()())>
std::string contextOf(F& what) { return what(); }

template <typename Ctx, typename F>
Napi::Value guard(const Napi::CallbackInfo& info, Ctx&& what, F&& body) {
  Napi::Env env = info.Env();
  try {
    return body();
  } catch (const Napi::Error& e) {
    rethrowWithCode(e);
    return env.Undefined();
  } catch (...) {
    return raise(env, translate(std::current_exception(), contextOf(what)));
  }
}

// ---- value conversion (convert.cpp) -------------------------------------------------------
// The one JS <-> IValue converter, driven by the schema type. Two forms of the same values:
//  - Handles: tensors are handle numbers (aten ops: lib/torch wraps results by the op's schema);
//  - Objects: tensors are Tensor objects and modules ScriptModule objects (TorchScript methods and
//    attributes, whose types are only known at run time); a plain number is never taken for a tensor.
// Dict[str, T] and Dict[int, T] are accepted in both; a result dict with other keys is a TypeError.
enum class Form { Handles, Objects };
c10::IValue toIValue(Napi::Env env, const Napi::Value& v, const c10::TypePtr& type, const std::string& argName,
                     Form form = Form::Handles);
Napi::Value fromIValue(Napi::Env env, const c10::IValue& v, Form form = Form::Handles);
// Set once by lib/torch/jit.ts (jitInit): wrap a tensor / module handle into its JS object, and the
// Tensor class that tells a Tensor argument from a plain number.
void setObjectForm(Napi::Function wrapTensor, Napi::Function wrapModule, Napi::Function tensorClass);
c10::ScalarType scalarTypeFrom(const Napi::Value& v);
c10::Device deviceFrom(const Napi::Value& v);
std::vector<int64_t> intListFrom(const Napi::Value& v, const char* what);

// ---- registration (one per file) -------------------------------------------------------------
void registerHandles(Napi::Env env, Napi::Object exports);
void registerErrors(Napi::Env env, Napi::Object exports);
void registerTensor(Napi::Env env, Napi::Object exports);
void registerOps(Napi::Env env, Napi::Object exports);
void registerAutograd(Napi::Env env, Napi::Object exports);
void registerState(Napi::Env env, Napi::Object exports);
void registerJit(Napi::Env env, Napi::Object exports);
void registerSafetensors(Napi::Env env, Napi::Object exports);
void registerDistributed(Napi::Env env, Napi::Object exports);
void registerCpuCache(Napi::Env env, Napi::Object exports);

}  // namespace tim

// The one error funnel: every exception that crosses into JS passes through translate() + raise().
#include "common.h"
#include <c10/util/Exception.h>
#include <new>
#include <initializer_list>
#include <sstream>

namespace tim {
namespace {
Napi::FunctionReference g_torchError;

struct ArgError : std::exception {
  JsError e;
  explicit ArgError(JsError err) : e(std::move(err)) {}
  const char* what() const noexcept override { return e.message.c_str(); }
};

bool has(const std::string& s, const char* needle) { return s.find(needle) != std::string::npos; }

bool hasAny(const std::string& s, std::initializer_list<const char*> needles) {
  for (const char* n : needles)
    if (has(s, n)) return true;
  return false;
}

// c10 throws plain c10::Error for most failures; its message is the only signal of the kind.
// The patterns come from real libtorch 1.13 / 2.x messages (test/errors.test.ts checks a set of
// them); the order matters: the most specific kinds are tested first.
std::string classify(const std::string& m) {
  if (hasAny(m, {"out of memory", "can't allocate memory", "Failed to allocate", "Cannot allocate memory"}))
    return "E_OOM";
  if (hasAny(m, {"backward through the graph", "does not require grad", "leaf Variable", "in-place operation",
                 "inplace operation", "allow_unused", "does not have a grad_fn", "differentiated Tensors",
                 "retain_graph", "derivative for", "requires_grad"}))
    return "E_AUTOGRAD";
  if (hasAny(m, {"same device", "device type", "CUDA", "cuda device", "Expected a 'cuda'", "found at least two devices",
                 "not linked with support for", "backend. This could be because", "Invalid device",
                 "NVIDIA driver", "no CUDA GPUs", "NVIDIA GPU"}))  // a CUDA build on a machine without a GPU
    return "E_DEVICE";
  if (hasAny(m, {"scalar type", "dtype", "not implemented for '", "result type", "can't be cast",
                 "Expected object of", "must have the same dtype", "only supports floating", "floating point",
                 "with two bool tensors", "bool tensor is not supported", "with a bool tensor",
                 "Integers to negative integer powers", "Boolean value of Tensor", "must be long, byte or bool",
                 "Input type (", "cannot be converted to type"}))
    return "E_DTYPE";
  if (hasAny(m, {"Dimension out of range", "out of bounds", "out of range", "index ", "Index"}))
    return "E_INDEX";
  if (hasAny(m, {"size", "shape", "dimension", "dim", "numel", "broadcast", "mat1 and mat2", "invalid for input",
                 "Expected", "channels", "must be a matrix", "D tensor", "D or ", "-D", "Length of pad",
                 "at least 1D", "operands were provided"}))
    return "E_SHAPE";
  if (hasAny(m, {"Bool", "Long", "Half", "BFloat16"})) return "E_DTYPE";
  // A well-typed, well-shaped argument whose value libtorch rejects.
  if (hasAny(m, {"expects std", "range, but found", "step must be", "rounding_mode", "ZeroDivisionError",
                 "inconsistent with step sign", "must not be None", "required", "argument must be", "must either be",
                 "can take 0 and 1 values only"}))
    return "E_VALUE";
  return "E_TORCH";
}

// what_without_backtrace() still carries a trailing "Exception raised from ..." line in some builds;
// some messages also carry C++ source locations or boilerplate meant for PyTorch developers.
std::string clean(std::string m) {
  auto cut = [&](const char* marker) {
    auto p = m.find(marker);
    if (p != std::string::npos) m.resize(p);
  };
  cut("\nException raised from");
  cut("Exception raised from ");
  cut("  (Could this error message be improved?");
  cut(" This could be because the operator doesn't exist for this backend");  // followed by a backend list
  // "[enforce fail at alloc_cpu.cpp:75] err == 0. DefaultCPUAllocator: ..." -> "DefaultCPUAllocator: ..."
  if (m.rfind("[enforce fail at ", 0) == 0) {
    auto p = m.find("] ");
    if (p != std::string::npos) m.erase(0, p + 2);
    if (m.rfind("err == 0. ", 0) == 0) m.erase(0, 10);
  }
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}
}  // namespace

void throwType(const std::string& msg, const std::string& code) { throw ArgError({JsError::Type, code, msg}); }
void throwRange(const std::string& msg, const std::string& code) { throw ArgError({JsError::Range, code, msg}); }
void throwTorch(const std::string& msg, const std::string& code) { throw ArgError({JsError::Torch, code, msg}); }

std::string messageOf(const std::exception& e) {
  if (auto* c = dynamic_cast<const c10::Error*>(&e)) return clean(c->what_without_backtrace());
  return clean(e.what());
}

std::string describeTensor(const at::Tensor& t) {
  if (!t.defined()) return "None";
  std::ostringstream s;
  s << "Tensor[";
  for (int64_t i = 0; i < t.dim(); ++i) s << (i ? ", " : "") << t.size(i);
  s << "] " << c10::toString(t.scalar_type());
  if (!t.is_cpu()) s << " " << t.device();
  return s.str();
}

JsError translate(std::exception_ptr ep, const std::string& context) {
  auto withContext = [&](const std::string& m) { return context.empty() ? m : context + ": " + m; };
  try {
    std::rethrow_exception(ep);
  } catch (const ArgError& e) {
    JsError out = e.e;
    out.message = withContext(out.message);
    return out;
  } catch (const c10::OutOfMemoryError& e) {
    return {JsError::Torch, "E_OOM", withContext(clean(e.what_without_backtrace()))};
  } catch (const c10::IndexError& e) {
    return {JsError::Torch, "E_INDEX", withContext(clean(e.what_without_backtrace()))};
  } catch (const c10::NotImplementedError& e) {
    std::string raw = e.what_without_backtrace();
    std::string m = clean(raw);
    // "Could not run 'aten::empty.memory_format' with arguments from the 'CUDA' backend": the op
    // exists, the device does not (a CPU-only libtorch asked for CUDA).
    // 2.14 also throws NotImplementedError for a dtype an op refuses ("... with two bool tensors is
    // not supported"): the message's kind wins where it names one.
    const char* code = has(m, "not implemented for '")                                        ? "E_DTYPE"
                       : hasAny(m, {"'CUDA' backend", "'HIP' backend", "'MPS' backend", "'XPU' backend"}) ? "E_DEVICE"
                       : classify(m) == "E_DTYPE"                                              ? "E_DTYPE"
                                                                                              : "E_NOT_IMPLEMENTED";
    return {JsError::Torch, code, withContext(m)};
  } catch (const c10::ValueError& e) {  // TORCH_CHECK_VALUE: the message may still say more
    std::string m = clean(e.what_without_backtrace());
    std::string code = classify(m);
    return {JsError::Torch, code == "E_TORCH" ? "E_VALUE" : code, withContext(m)};
  } catch (const c10::TypeError& e) {  // TORCH_CHECK_TYPE: wrong type of tensor or argument
    std::string m = clean(e.what_without_backtrace());
    std::string code = classify(m);
    return {JsError::Torch, code == "E_TORCH" ? "E_DTYPE" : code, withContext(m)};
  } catch (const c10::Error& e) {
    std::string m = clean(e.what_without_backtrace());
    return {JsError::Torch, classify(m), withContext(m)};
  } catch (const std::bad_alloc&) {
    return {JsError::Torch, "E_OOM", withContext("out of memory (std::bad_alloc)")};
  } catch (const std::exception& e) {
    std::string m = e.what();
    return {JsError::Torch, classify(m), withContext(m)};
  } catch (...) {
    return {JsError::Torch, "E_TORCH", withContext("unknown native exception")};
  }
}

Napi::Value raise(Napi::Env env, const JsError& e) {
  Napi::Error err;
  if (e.kind == JsError::Type) {
    err = Napi::TypeError::New(env, e.message);
  } else if (e.kind == JsError::Range) {
    err = Napi::RangeError::New(env, e.message);
  } else if (!g_torchError.IsEmpty()) {
    err = Napi::Error(env, g_torchError.New({Napi::String::New(env, e.message), Napi::String::New(env, e.code)}));
  } else {
    err = Napi::Error::New(env, e.message);
  }
  err.Set("code", Napi::String::New(env, e.code));
  err.ThrowAsJavaScriptException();
  return env.Undefined();
}

void rethrowWithCode(const Napi::Error& e) {
  Napi::Env env = e.Env();
  std::string message = "invalid argument";
  try {
    Napi::Value v = e.Value();
    if (v.IsObject()) {
      Napi::Object o = v.As<Napi::Object>();
      if (o.Has("code")) {  // already typed (a TorchError, or an error we raised)
        e.ThrowAsJavaScriptException();
        return;
      }
      Napi::Value m = o.Get("message");
      if (m.IsString()) message = m.As<Napi::String>().Utf8Value();
    }
  } catch (const Napi::Error&) {
    // reading the error failed (a Proxy?): fall through to a fresh TypeError
  }
  // A napi call failed on a value of the wrong JS type, e.g. "A number was expected".
  raise(env, {JsError::Type, "E_ARG", message});
}

void setErrorClasses(Napi::Env env, Napi::Function torchError) {
  g_torchError = Napi::Persistent(torchError);
}

static Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  return guard(info, "setErrorClass", [&]() -> Napi::Value {
    if (!info[0].IsFunction()) throwType("setErrorClass expects the TorchError class");
    setErrorClasses(info.Env(), info[0].As<Napi::Function>());
    return info.Env().Undefined();
  });
}

void registerErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
}

}  // namespace tim

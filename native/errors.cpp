// The one error funnel: every exception that crosses into JS passes through translate() + raise().
#include "common.h"
#include <c10/util/Exception.h>
#include <new>
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

// c10 throws plain c10::Error for most failures; its message is the only signal of the kind.
std::string classify(const std::string& m) {
  if (has(m, "out of memory") || has(m, "can't allocate memory") || has(m, "Failed to allocate"))
    return "E_OOM";
  if (has(m, "same device") || has(m, "device type") || has(m, "CUDA") || has(m, "Expected a 'cuda'") ||
      has(m, "found at least two devices"))
    return "E_DEVICE";
  if (has(m, "Dimension out of range") || has(m, "out of bounds") || has(m, "out of range") ||
      has(m, "index ") || has(m, "Index"))
    return "E_INDEX";
  if (has(m, "scalar type") || has(m, "dtype") || has(m, "not implemented for '") ||
      has(m, "result type") || has(m, "can't be cast") || has(m, "Expected object of") ||
      has(m, "must have the same dtype") || has(m, "only supports floating") ||
      has(m, "floating point") || has(m, "Bool") || has(m, "Long"))
    return "E_DTYPE";
  if (has(m, "size") || has(m, "shape") || has(m, "dimension") || has(m, "dim") || has(m, "numel") ||
      has(m, "broadcast") || has(m, "mat1 and mat2") || has(m, "invalid for input") || has(m, "Expected"))
    return "E_SHAPE";
  return "E_TORCH";
}

// what_without_backtrace() still carries a trailing "Exception raised from ..." line in some builds.
std::string clean(std::string m) {
  auto p = m.find("\nException raised from");
  if (p != std::string::npos) m.resize(p);
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}
}  // namespace

void throwType(const std::string& msg, const std::string& code) { throw ArgError({JsError::Type, code, msg}); }
void throwRange(const std::string& msg, const std::string& code) { throw ArgError({JsError::Range, code, msg}); }
void throwTorch(const std::string& msg, const std::string& code) { throw ArgError({JsError::Torch, code, msg}); }

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
    std::string m = clean(e.what_without_backtrace());
    return {JsError::Torch, has(m, "not implemented for '") ? "E_DTYPE" : "E_NOT_IMPLEMENTED", withContext(m)};
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

void setErrorClasses(Napi::Env env, Napi::Function torchError) {
  g_torchError = Napi::Persistent(torchError);
}

static Napi::Value SetErrorClass(const Napi::CallbackInfo& info) {
  setErrorClasses(info.Env(), info[0].As<Napi::Function>());
  return info.Env().Undefined();
}

void registerErrors(Napi::Env env, Napi::Object exports) {
  exports.Set("setErrorClass", Napi::Function::New(env, SetErrorClass, "setErrorClass"));
}

}  // namespace tim

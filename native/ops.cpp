// Generic access to every ATen operator through the c10 dispatcher: JS resolves an operator once
// (name + overload) to an integer id, then calls it with positional arguments converted by the
// operator's schema. Autograd, autocast and device dispatch all happen inside the dispatcher.
#include "async.h"
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>
#include <sstream>

namespace tim {
namespace {

std::vector<c10::OperatorHandle> g_ops;

const c10::OperatorHandle& opAt(const Napi::Value& v) {
  double id;  // one napi call: it fails for anything that is not a number
  if (napi_get_value_double(v.Env(), v, &id) != napi_ok) throwType("expected an operator id");
  if (!(id >= 0) || id >= (double)g_ops.size() || id != (double)(int64_t)id) throwRange("unknown operator id");
  return g_ops[(size_t)id];
}

std::string opName(const c10::OperatorHandle& op) {
  const auto& n = op.operator_name();
  return n.overload_name.empty() ? n.name : n.name + "." + n.overload_name;
}

// Builds the argument stack from info[first..] into `stack` (emptied first); missing trailing
// arguments take schema defaults.
void buildStack(const Napi::CallbackInfo& info, size_t first, const c10::FunctionSchema& schema, torch::jit::Stack& stack) {
  Napi::Env env = info.Env();
  const auto& args = schema.arguments();
  size_t given = info.Length() - first;
  if (given > args.size())
    throwType(schema.name() + " takes " + std::to_string(args.size()) + " arguments, got " + std::to_string(given));
  stack.clear();
  stack.reserve(args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    const auto& a = args[i];
    Napi::Value v = i < given ? info[first + i] : env.Undefined();
    if (v.IsUndefined() && a.default_value().has_value()) {
      stack.push_back(*a.default_value());
    } else if (v.IsUndefined() && a.type()->kind() != c10::TypeKind::OptionalType) {
      throwType("missing argument '" + a.name() + "'");
    } else {
      stack.push_back(toIValue(env, v, a.type(), a.name()));
    }
  }
}

// The synchronous calls reuse one stack, so an op call allocates no argument vector. Converting an
// argument can run JS (a getter or Proxy in an array), which may call an op again: a nested call
// gets a stack of its own.
class CallStack {
 public:
  CallStack() : own_(g_busy ? &local_ : &g_shared), outer_(!g_busy) { g_busy = true; }
  ~CallStack() {
    own_->clear();  // release argument and result tensors now, as a fresh stack would
    if (outer_) g_busy = false;
  }
  torch::jit::Stack& get() { return *own_; }

 private:
  static inline torch::jit::Stack g_shared;
  static inline bool g_busy = false;
  torch::jit::Stack local_;
  torch::jit::Stack* own_;
  bool outer_;
};

Napi::Value returnsToJs(Napi::Env env, torch::jit::Stack& stack) {
  if (stack.empty()) return env.Undefined();
  if (stack.size() == 1) return fromIValue(env, stack[0]);
  auto arr = Napi::Array::New(env, stack.size());
  for (size_t i = 0; i < stack.size(); ++i) arr.Set((uint32_t)i, fromIValue(env, stack[i]));
  return arr;
}

// "aten::add.Tensor(Tensor[2, 3] Float, Tensor[4] Float)": rebuilt from the JS arguments only when a
// call failed, so the hot path pays nothing for it.
std::string describeCall(const Napi::CallbackInfo& info, size_t first) {
  std::ostringstream s;
  try {
    const auto& op = opAt(info[0]);
    s << opName(op) << "(";
    const auto& args = op.schema().arguments();
    for (size_t i = first; i < info.Length(); ++i) {
      if (i > first) s << ", ";
      size_t ai = i - first;
      bool tensorish = ai < args.size() && args[ai].type()->str().find("Tensor") != std::string::npos;
      Napi::Value v = info[i];
      if (tensorish && v.IsNumber()) {
        const at::Tensor* t = tryTensorAt(handleFrom(v));
        s << (t ? describeTensor(*t) : "<disposed tensor>");
      } else if (tensorish && v.IsArray()) {
        auto arr = v.As<Napi::Array>();
        s << "[";
        for (uint32_t j = 0; j < arr.Length() && j < 8; ++j) {
          Napi::Value e = arr.Get(j);
          const at::Tensor* t = tryTensorAt(handleFrom(e));
          s << (j ? ", " : "") << (t ? describeTensor(*t) : e.IsNull() ? "None" : "?");
        }
        s << (arr.Length() > 8 ? ", ...]" : "]");
      } else if (v.IsNumber()) {
        s << v.As<Napi::Number>().DoubleValue();
      } else if (v.IsBoolean()) {
        s << (v.As<Napi::Boolean>().Value() ? "true" : "false");
      } else if (v.IsString()) {
        s << "'" << v.As<Napi::String>().Utf8Value() << "'";
      } else if (v.IsArray()) {
        auto arr = v.As<Napi::Array>();
        s << "[";
        for (uint32_t j = 0; j < arr.Length() && j < 8; ++j) {
          Napi::Value e = arr.Get(j);
          s << (j ? ", " : "") << (e.IsNumber() ? std::to_string((long long)e.As<Napi::Number>().DoubleValue()) : "?");
        }
        s << "]";
      } else if (v.IsNull() || v.IsUndefined()) {
        s << "None";
      } else {
        s << "?";
      }
    }
    s << ")";
  } catch (...) {
    return "op";
  }
  return s.str();
}

}  // namespace

static Napi::Value ResolveOp(const Napi::CallbackInfo& info) {
  return guard(info, "resolveOp", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    if (!info[0].IsString() || !info[1].IsString()) throwType("resolveOp(name, overload) expects strings");
    std::string name = info[0].As<Napi::String>().Utf8Value(), overload = info[1].As<Napi::String>().Utf8Value();
    auto handle = c10::Dispatcher::singleton().findSchema({name, overload});
    if (!handle) throwTorch("no operator " + name + (overload.empty() ? "" : "." + overload) + " in this libtorch", "E_NOT_IMPLEMENTED");
    g_ops.push_back(*handle);
    return Napi::Number::New(env, (double)g_ops.size() - 1);
  });
}

static Napi::Value OpSchema(const Napi::CallbackInfo& info) {
  return guard(info, "opSchema", [&]() -> Napi::Value {
    std::ostringstream s;
    s << opAt(info[0]).schema();
    return Napi::String::New(info.Env(), s.str());
  });
}

// Errors of a call name the op and the argument shapes, described only when the call failed.
#define TIM_CALL_CONTEXT [&] { return describeCall(info, 1); }

// call(opId, ...args)
static Napi::Value Call(const Napi::CallbackInfo& info) {
  return guard(info, TIM_CALL_CONTEXT, [&]() -> Napi::Value {
    const auto& op = opAt(info[0]);
    CallStack cs;
    buildStack(info, 1, op.schema(), cs.get());
    op.callBoxed(&cs.get());
    return returnsToJs(info.Env(), cs.get());
  });
}

// callVoid(opId, ...args): call() without converting the results, for in-place ops (add_, fill_ ...):
// their result is `self`, and converting it would put a second, never-freed handle in the table.
static Napi::Value CallVoid(const Napi::CallbackInfo& info) {
  return guard(info, TIM_CALL_CONTEXT, [&]() -> Napi::Value {
    const auto& op = opAt(info[0]);
    CallStack cs;
    buildStack(info, 1, op.schema(), cs.get());
    op.callBoxed(&cs.get());
    return info.Env().Undefined();
  });
}

// callAsync(opId, ...args) -> Promise: the same, on a worker thread.
static Napi::Value CallAsync(const Napi::CallbackInfo& info) {
  return guard(info, TIM_CALL_CONTEXT, [&]() -> Napi::Value {
    const c10::OperatorHandle op = opAt(info[0]);
    auto stack = std::make_shared<torch::jit::Stack>();
    buildStack(info, 1, op.schema(), *stack);
    // Described now, on the JS thread: a worker error names the op and the argument shapes too.
    return AsyncTask::start(
        info.Env(), describeCall(info, 1), [op, stack]() { op.callBoxed(stack.get()); },
        [stack](Napi::Env env) { return returnsToJs(env, *stack); });
  });
}

// opTypes(opId) -> { args: [...], returns: [...] }: the schema's argument and return types as
// strings (e.g. "Tensor", "int[]", "Tensor?[]"), so JS can convert each argument by its type and
// wrap exactly the results that are tensor handles.
static Napi::Value OpTypes(const Napi::CallbackInfo& info) {
  return guard(info, "opTypes", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const auto& schema = opAt(info[0]).schema();
    auto list = [&](const std::vector<c10::Argument>& xs) {
      auto arr = Napi::Array::New(env, xs.size());
      for (size_t i = 0; i < xs.size(); ++i) arr.Set((uint32_t)i, Napi::String::New(env, xs[i].type()->str()));
      return arr;
    };
    auto o = Napi::Object::New(env);
    o.Set("args", list(schema.arguments()));
    o.Set("returns", list(schema.returns()));
    return o;
  });
}

void registerOps(Napi::Env env, Napi::Object exports) {
  exports.Set("opTypes", Napi::Function::New(env, OpTypes, "opTypes"));
  exports.Set("resolveOp", Napi::Function::New(env, ResolveOp, "resolveOp"));
  exports.Set("opSchema", Napi::Function::New(env, OpSchema, "opSchema"));
  exports.Set("call", Napi::Function::New(env, Call, "call"));
  exports.Set("callVoid", Napi::Function::New(env, CallVoid, "callVoid"));
  exports.Set("callAsync", Napi::Function::New(env, CallAsync, "callAsync"));
}

}  // namespace tim

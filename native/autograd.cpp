// Autograd entry points: backward, autograd.grad, .grad access and grad mode.
#include "async.h"
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/grad_mode.h>

namespace tim {

static std::vector<at::Tensor> tensorList(Napi::Env env, const Napi::Value& v, bool allowNull) {
  std::vector<at::Tensor> out;
  if (!v.IsArray()) throwType("expected an array of tensors");
  auto arr = v.As<Napi::Array>();
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value e = arr.Get(i);
    if (allowNull && (e.IsNull() || e.IsUndefined())) out.emplace_back();
    else out.push_back(tensorAt(env, e));
  }
  return out;
}

static bool boolArg(const Napi::CallbackInfo& info, size_t i, bool dflt) {
  return info.Length() > i && info[i].IsBoolean() ? info[i].As<Napi::Boolean>().Value() : dflt;
}

// The arguments of backward(tensors, grads|null, retainGraph, createGraph), checked on the JS thread.
struct BackwardArgs {
  std::vector<at::Tensor> tensors, grads;
  c10::optional<bool> retain;
  bool create = false;
};

static BackwardArgs backwardArgs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  BackwardArgs a;
  a.tensors = tensorList(env, info[0], false);
  if (info[1].IsArray()) a.grads = tensorList(env, info[1], true);
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    const auto& t = a.tensors[i];
    if (!t.requires_grad())
      throwTorch(describeTensor(t) + " does not require grad and has no grad_fn", "E_AUTOGRAD");
    if ((i >= a.grads.size() || !a.grads[i].defined()) && t.numel() != 1)
      throwTorch("grad can be implicitly created only for scalar outputs, got " + describeTensor(t), "E_SHAPE");
  }
  a.create = boolArg(info, 3, false);
  if (info.Length() > 2 && info[2].IsBoolean()) a.retain = info[2].As<Napi::Boolean>().Value();
  return a;
}

static Napi::Value Backward(const Napi::CallbackInfo& info) {
  return guard(info, "backward", [&]() -> Napi::Value {
    BackwardArgs a = backwardArgs(info);
    torch::autograd::backward(a.tensors, a.grads, a.retain, a.create);
    return info.Env().Undefined();
  });
}

// backwardAsync(...) -> Promise<void>: the same on a worker thread (the autograd engine is
// thread-safe; .grad must not be read until the promise settles).
static Napi::Value BackwardAsync(const Napi::CallbackInfo& info) {
  return guard(info, "backward", [&]() -> Napi::Value {
    auto a = std::make_shared<BackwardArgs>(backwardArgs(info));
    std::string what = "backward(" + (a->tensors.empty() ? std::string() : describeTensor(a->tensors[0])) + ")";
    return AsyncTask::start(
        info.Env(), what, [a]() { torch::autograd::backward(a->tensors, a->grads, a->retain, a->create); },
        [a](Napi::Env env) -> Napi::Value {
          // Drop the graph references on the JS thread, promptly, rather than whenever the task dies.
          a->tensors.clear();
          a->grads.clear();
          return env.Undefined();
        });
  });
}

// grad(outputs, inputs, gradOutputs|null, retainGraph, createGraph, allowUnused) -> handles (null when unused)
static Napi::Value Grad(const Napi::CallbackInfo& info) {
  return guard(info, "autograd.grad", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    auto outputs = tensorList(env, info[0], false);
    auto inputs = tensorList(env, info[1], false);
    std::vector<at::Tensor> gradOutputs;
    if (info[2].IsArray()) gradOutputs = tensorList(env, info[2], true);
    for (const auto& in : inputs)
      if (!in.requires_grad()) throwTorch("input " + describeTensor(in) + " does not require grad", "E_AUTOGRAD");
    for (size_t i = 0; i < outputs.size(); ++i)
      if ((i >= gradOutputs.size() || !gradOutputs[i].defined()) && outputs[i].numel() != 1)
        throwTorch("grad can be implicitly created only for scalar outputs, got " + describeTensor(outputs[i]), "E_SHAPE");
    bool create = boolArg(info, 4, false);
    c10::optional<bool> retain;
    if (info.Length() > 3 && info[3].IsBoolean()) retain = info[3].As<Napi::Boolean>().Value();
    bool allowUnused = boolArg(info, 5, false);
    auto grads = torch::autograd::grad(outputs, inputs, gradOutputs, retain, create, allowUnused);
    auto arr = Napi::Array::New(env, grads.size());
    for (size_t i = 0; i < grads.size(); ++i)
      arr.Set((uint32_t)i, grads[i].defined() ? Napi::Value(Napi::Number::New(env, insertTensor(env, grads[i]))) : env.Null());
    return arr;
  });
}

static Napi::Value GetGrad(const Napi::CallbackInfo& info) {
  return guard(info, "grad", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const at::Tensor& g = tensorAt(env, info[0]).grad();
    if (!g.defined()) return env.Null();
    return Napi::Number::New(env, insertTensor(env, g));
  });
}

static Napi::Value SetGrad(const Napi::CallbackInfo& info) {
  return guard(info, "grad=", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    at::Tensor t = tensorAt(env, info[0]);
    if (info[1].IsNull() || info[1].IsUndefined()) t.mutable_grad() = at::Tensor();
    else {
      const at::Tensor& g = tensorAt(env, info[1]);
      if (g.sizes() != t.sizes()) throwTorch("grad shape " + describeTensor(g) + " does not match " + describeTensor(t), "E_SHAPE");
      if (g.scalar_type() != t.scalar_type()) throwTorch("grad dtype " + describeTensor(g) + " does not match " + describeTensor(t), "E_DTYPE");
      t.mutable_grad() = g;
    }
    return env.Undefined();
  });
}

static Napi::Value SetGradEnabled(const Napi::CallbackInfo& info) {
  return guard(info, "setGradEnabled", [&]() -> Napi::Value {
    bool prev = at::GradMode::is_enabled();
    if (info[0].IsBoolean()) at::GradMode::set_enabled(info[0].As<Napi::Boolean>().Value());
    return Napi::Boolean::New(info.Env(), prev);
  });
}

static Napi::Value IsGradEnabled(const Napi::CallbackInfo& info) {
  return guard(info, "isGradEnabled", [&]() -> Napi::Value {
    return Napi::Boolean::New(info.Env(), at::GradMode::is_enabled());
  });
}

void registerAutograd(Napi::Env env, Napi::Object exports) {
  exports.Set("backward", Napi::Function::New(env, Backward, "backward"));
  exports.Set("backwardAsync", Napi::Function::New(env, BackwardAsync, "backwardAsync"));
  exports.Set("grad", Napi::Function::New(env, Grad, "grad"));
  exports.Set("getGrad", Napi::Function::New(env, GetGrad, "getGrad"));
  exports.Set("setGrad", Napi::Function::New(env, SetGrad, "setGrad"));
  exports.Set("setGradEnabled", Napi::Function::New(env, SetGradEnabled, "setGradEnabled"));
  exports.Set("isGradEnabled", Napi::Function::New(env, IsGradEnabled, "isGradEnabled"));
}

}  // namespace tim

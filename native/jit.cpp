// TorchScript modules: handles (handle_table.h) to torch::jit::Module (a reference type, so a handle
// to a submodule aliases the parent's submodule), method calls converted by the method's schema
// (convert.cpp, Form::Objects), clone, and the builder primitives (register parameter / buffer /
// attribute / submodule, define). Policy (state-dict checks, atomic save, options) lives in
// lib/torch/jit.ts.
#include "async.h"
#include "handle_table.h"
#include <ATen/core/jit_type.h>
#include <torch/csrc/jit/api/compilation_unit.h>
#include <torch/csrc/jit/api/function_impl.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/frontend/script_type_parser.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/csrc/jit/runtime/graph_executor.h>
#include <fstream>
#include <optional>
#include <cctype>
#include <sstream>
#include <unordered_set>

namespace tim {
namespace {

using torch::jit::Module;

// ---- module table ----------------------------------------------------------------------------
// Its own table (module handles are not tensors and do not count in liveTensors), same rules.
HandleTable<Module> g_mods("too many live modules (16M)");

// Modules built in TS share one compilation unit (like Python's global one); their class names are
// made unique with a counter, so two builders named alike never clash.
std::shared_ptr<torch::jit::CompilationUnit> g_cu = std::make_shared<torch::jit::CompilationUnit>();
int64_t g_classCounter = 0;

// A copy (Module is a reference to the object), so no caller holds a pointer into the table across
// a call that may grow it.
Module moduleAt(const Napi::Value& v) {
  if (!v.IsNumber()) throwType("expected a ScriptModule");
  Module* m = g_mods.find(handleFrom(v));
  if (!m) throwTorch("module was disposed (use after dispose)", "E_DISPOSED");
  return *m;
}

std::string str(const Napi::Value& v, const char* what) {
  if (!v.IsString()) throwType(std::string(what) + ": expected a string");
  return v.As<Napi::String>().Utf8Value();
}

// Only modules whose class lives in our compilation unit may be extended: a loaded module's class
// can be shared by several instances (Python shares types between alike submodules), so adding an
// attribute to one would corrupt the others.
void requireBuilt(const Module& m, const char* what) {
  if (m.type()->compilation_unit() != g_cu)
    throwTorch(std::string(what) + ": only modules created with torch.jit.createModule() can be extended (this one is " +
                   m.type()->repr_str() + ")",
               "E_MODULE");
}

// Positional arguments, then keyword arguments by name, then schema defaults. `self` is skipped.
torch::jit::Stack buildMethodStack(Napi::Env env, const c10::FunctionSchema& schema, const Napi::Value& argsV,
                                   const Napi::Value& kwargsV) {
  if (!argsV.IsArray()) throwType("arguments must be an array");
  auto args = argsV.As<Napi::Array>();
  const auto& formals = schema.arguments();
  size_t nFormal = formals.empty() ? 0 : formals.size() - 1;
  if (args.Length() > nFormal)
    throwType(schema.name() + "() takes " + std::to_string(nFormal) + " arguments, got " + std::to_string(args.Length()) +
              " (schema: " + c10::toString(schema) + ")");
  Napi::Object kwargs;
  bool hasKw = kwargsV.IsObject() && !kwargsV.IsArray();
  std::unordered_set<std::string> usedKw;
  if (hasKw) kwargs = kwargsV.As<Napi::Object>();
  torch::jit::Stack stack;
  stack.reserve(nFormal);
  for (size_t i = 0; i < nFormal; ++i) {
    const auto& a = formals[i + 1];
    Napi::Value v = env.Undefined();
    if (i < args.Length()) {
      v = args.Get((uint32_t)i);
      if (hasKw && kwargs.HasOwnProperty(a.name()))
        throwType(schema.name() + "() got argument '" + a.name() + "' both by position and by name");
    } else if (hasKw && kwargs.HasOwnProperty(a.name())) {
      v = kwargs.Get(a.name());
      usedKw.insert(a.name());
    }
    if (v.IsUndefined() && a.default_value().has_value()) {
      stack.push_back(*a.default_value());
    } else if (v.IsUndefined() && a.type()->kind() != c10::TypeKind::OptionalType) {
      throwType(schema.name() + "() missing argument '" + a.name() + "' (schema: " + c10::toString(schema) + ")");
    } else {
      stack.push_back(toIValue(env, v, a.type(), a.name(), Form::Objects));
    }
  }
  if (hasKw) {
    auto names = kwargs.GetPropertyNames();
    for (uint32_t i = 0; i < names.Length(); ++i) {
      std::string k = names.Get(i).ToString().Utf8Value();
      if (!usedKw.count(k)) {
        bool known = false;
        for (size_t j = 1; j < formals.size(); ++j) known = known || formals[j].name() == k;
        if (!known) throwType(schema.name() + "() got an unexpected keyword argument '" + k + "'");
      }
    }
  }
  return stack;
}

torch::jit::Method methodOf(const Module& m, const std::string& name) {
  auto method = m.find_method(name);
  if (!method) {
    std::string names;
    for (const auto& mm : m.get_methods()) names += (names.empty() ? "" : ", ") + mm.name();
    throwTorch("module " + m.type()->repr_str() + " has no method '" + name + "' (methods: " + (names.empty() ? "none" : names) + ")",
               "E_ATTR");
  }
  return *method;
}

Napi::Array pairs(Napi::Env env, const std::vector<std::pair<std::string, Napi::Value>>& items) {
  auto arr = Napi::Array::New(env, items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    auto p = Napi::Array::New(env, 2);
    p.Set(0u, Napi::String::New(env, items[i].first));
    p.Set(1u, items[i].second);
    arr.Set((uint32_t)i, p);
  }
  return arr;
}

// Python's state_dict order: each module's own parameters, then its buffers, then its children.
void stateWalk(const Module& m, const std::string& prefix, std::vector<std::pair<std::string, at::Tensor>>& out) {
  for (const auto& p : m.named_parameters(false)) out.emplace_back(prefix + p.name, p.value);
  for (const auto& b : m.named_buffers(false)) out.emplace_back(prefix + b.name, b.value);
  for (const auto& c : m.named_children()) stateWalk(c.value, prefix + c.name + ".", out);
}

// Like nn.Module.to(): floating-point tensors take the dtype, every tensor the device; the tensor
// object is kept (set_data) so handles and optimizers holding a parameter still see it.
void moveTensor(const at::Tensor& t, const std::optional<c10::Device>& device, const std::optional<c10::ScalarType>& dtype,
                bool nonBlocking) {
  if (!t.defined()) return;
  c10::ScalarType st = dtype && t.is_floating_point() ? *dtype : t.scalar_type();
  c10::Device dev = device ? *device : t.device();
  if (st == t.scalar_type() && dev == t.device()) return;
  at::NoGradGuard noGrad;
  at::Tensor moved = t.to(dev, st, nonBlocking);
  const_cast<at::Tensor&>(t).set_data(moved);
  if (t.grad().defined()) {
    at::Tensor& g = const_cast<at::Tensor&>(t).mutable_grad();
    g.set_data(g.to(dev, st, nonBlocking));
  }
}

// ---- entry points ----------------------------------------------------------------------------

Napi::Value Init(const Napi::CallbackInfo& info) {
  return guard(info, "jit.init", [&]() -> Napi::Value {
    if (!info[0].IsFunction() || !info[1].IsFunction() || !info[2].IsFunction()) throwType("jitInit(wrapTensor, wrapModule, Tensor)");
    setObjectForm(info[0].As<Napi::Function>(), info[1].As<Napi::Function>(), info[2].As<Napi::Function>());
    return info.Env().Undefined();
  });
}

Napi::Value Load(const Napi::CallbackInfo& info) {
  return guard(info, "torch.jit.load", [&]() -> Napi::Value {
    std::string path = str(info[0], "path");
    std::optional<c10::Device> device;
    if (info.Length() > 1 && !info[1].IsUndefined() && !info[1].IsNull()) device = deviceFrom(info[1]);
    {
      std::ifstream f(path, std::ios::binary);
      if (!f.good()) throwTorch("cannot open '" + path + "' for reading", "E_IO");
    }
    Module m;
    try {
      m = device ? torch::jit::load(path, *device) : torch::jit::load(path);
    } catch (const std::exception& e) {
      throwTorch("'" + path + "' is not a loadable TorchScript archive: " + messageOf(e), "E_FORMAT");
    }
    return Napi::Number::New(info.Env(), (double)insertModule(m));
  });
}

Napi::Value Create(const Napi::CallbackInfo& info) {
  return guard(info, "torch.jit.createModule", [&]() -> Napi::Value {
    std::string name = str(info[0], "name");
    bool ident = !name.empty() && !std::isdigit((unsigned char)name[0]);
    for (char c : name) ident = ident && (std::isalnum((unsigned char)c) || c == '_');
    if (!ident) throwType("createModule: name must be an identifier, got '" + name + "'");
    std::string qual = "__torch__.tim." + name + "_" + std::to_string(g_classCounter++);
    Module m(c10::QualifiedName(qual), g_cu, /*shouldMangle=*/true);
    // Every nn.Module has `training`; Module::train() and `self.training` in TorchScript need it.
    m.register_attribute("training", c10::BoolType::get(), true);
    return Napi::Number::New(info.Env(), (double)insertModule(m));
  });
}

Napi::Value Free(const Napi::CallbackInfo& info) {
  return guard(info, "jitFree", [&]() -> Napi::Value {
    return Napi::Boolean::New(info.Env(), g_mods.remove(handleFrom(info[0])).has_value());
  });
}

Napi::Value LiveModules(const Napi::CallbackInfo& info) {
  return guard(info, "jitLiveModules", [&]() -> Napi::Value { return Napi::Number::New(info.Env(), (double)g_mods.live()); });
}

// clone(h) -> a new module with its own copies of every parameter, buffer and attribute (and its
// own class types, so extending the clone never changes the original). Like Python's deepcopy of
// parameters, the copies are leaves with the originals' requires_grad; gradients are not copied.
Napi::Value Clone(const Napi::CallbackInfo& info) {
  return guard(info, "clone", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    Module c;
    {
      at::NoGradGuard noGrad;  // a copy made under autograd would be a non-leaf with a CloneBackward
      c = m.clone();
    }
    auto restore = [](auto from, auto to) {
      auto f = from.begin(), t = to.begin();
      for (; f != from.end() && t != to.end(); ++f, ++t) (*t).value.set_requires_grad((*f).value.requires_grad());
    };
    restore(m.named_parameters(true), c.named_parameters(true));
    restore(m.named_buffers(true), c.named_buffers(true));
    return Napi::Number::New(info.Env(), (double)insertModule(c));
  });
}

Napi::Value TypeName(const Napi::CallbackInfo& info) {
  return guard(info, "typeName", [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), moduleAt(info[0]).type()->name()->qualifiedName());
  });
}

Napi::Value Same(const Napi::CallbackInfo& info) {
  return guard(info, "same", [&]() -> Napi::Value {
    return Napi::Boolean::New(info.Env(), moduleAt(info[0])._ivalue() == moduleAt(info[1])._ivalue());
  });
}

Napi::Value Methods(const Napi::CallbackInfo& info) {
  return guard(info, "methods", [&]() -> Napi::Value {
    auto ms = moduleAt(info[0]).get_methods();
    auto arr = Napi::Array::New(info.Env(), ms.size());
    for (size_t i = 0; i < ms.size(); ++i) arr.Set((uint32_t)i, Napi::String::New(info.Env(), ms[i].name()));
    return arr;
  });
}

Napi::Value Schema(const Napi::CallbackInfo& info) {
  return guard(info, "schema", [&]() -> Napi::Value {
    auto method = methodOf(moduleAt(info[0]), str(info[1], "method"));
    return Napi::String::New(info.Env(), c10::toString(method.function().getSchema()));
  });
}

Napi::Value Code(const Napi::CallbackInfo& info) {
  return guard(info, "code", [&]() -> Napi::Value {
    auto method = methodOf(moduleAt(info[0]), str(info[1], "method"));
    std::ostringstream s;
    s << *toGraphFunction(method.function()).graph();
    return Napi::String::New(info.Env(), s.str());
  });
}

// call(h, name, args[], kwargs?)
Napi::Value Call(const Napi::CallbackInfo& info) {
  std::string name = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "method";
  return guard(info, name.c_str(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    auto method = methodOf(moduleAt(info[0]), name);
    auto stack = buildMethodStack(env, method.function().getSchema(), info[2], info[3]);
    method.run(stack);
    return stack.empty() ? env.Undefined() : fromIValue(env, stack.front(), Form::Objects);
  });
}

Napi::Value CallAsync(const Napi::CallbackInfo& info) {
  std::string name = info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "method";
  return guard(info, name.c_str(), [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    // The Method holds the module object, so the module outlives the call even if disposed meanwhile.
    auto method = methodOf(moduleAt(info[0]), name);
    auto stack = std::make_shared<torch::jit::Stack>(buildMethodStack(env, method.function().getSchema(), info[2], info[3]));
    // the graph executor's optimize flag is thread-local and not part of at::ThreadLocalState: carried by hand
    bool optimize = torch::jit::getGraphExecutorOptimize();
    return AsyncTask::start(
        env, "forwardAsync", [method, stack, optimize]() mutable {
          torch::jit::setGraphExecutorOptimize(optimize);
          method.run(*stack);
        },
        [stack](Napi::Env env) { return stack->empty() ? env.Undefined() : fromIValue(env, stack->front(), Form::Objects); });
  });
}

// jitSetOptimize(on) -> the previous value: whether TorchScript's graph executor optimizes the graphs
// run on this thread (profiling, autodiff subgraphs with symbolic backward formulas, fusion), as
// Python's torch.jit.optimized_execution. Off, a graph runs op by op and autograd records each op as
// eager PyTorch does. The policy (when to turn it off) lives in TypeScript.
Napi::Value SetOptimize(const Napi::CallbackInfo& info) {
  return guard(info, "jitSetOptimize", [&]() -> Napi::Value {
    if (!info[0].IsBoolean()) throwType("jitSetOptimize(on: boolean)");
    bool before = torch::jit::getGraphExecutorOptimize();
    torch::jit::setGraphExecutorOptimize(info[0].As<Napi::Boolean>().Value());
    return Napi::Boolean::New(info.Env(), before);
  });
}

Napi::Value Train(const Napi::CallbackInfo& info) {
  return guard(info, "train", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    bool on = !info[1].IsBoolean() || info[1].As<Napi::Boolean>().Value();
    for (Module sub : m.modules()) {
      if (!sub.type()->hasAttribute("training")) throwTorch("module " + sub.type()->repr_str() + " has no 'training' attribute", "E_MODULE");
    }
    m.train(on);
    return info.Env().Undefined();
  });
}

Napi::Value IsTraining(const Napi::CallbackInfo& info) {
  return guard(info, "isTraining", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    c10::IValue v = m.attr("training", true);
    return Napi::Boolean::New(info.Env(), v.isBool() ? v.toBool() : true);
  });
}

// to(h, device|null, dtype|null, nonBlocking)
Napi::Value To(const Napi::CallbackInfo& info) {
  return guard(info, "to", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    std::optional<c10::Device> device;
    std::optional<c10::ScalarType> dtype;
    if (!info[1].IsUndefined() && !info[1].IsNull()) device = deviceFrom(info[1]);
    if (!info[2].IsUndefined() && !info[2].IsNull()) {
      dtype = scalarTypeFrom(info[2]);
      if (!c10::isFloatingType(*dtype)) throwType("to(): dtype must be a floating-point type (like nn.Module.to)", "E_DTYPE");
    }
    bool nb = info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
    for (const at::Tensor& p : m.parameters(true)) moveTensor(p, device, dtype, nb);
    for (const at::Tensor& b : m.buffers(true)) moveTensor(b, device, dtype, nb);
    return info.Env().Undefined();
  });
}

// Python's named_parameters()/named_buffers() order (a module's own, then each child's, depth
// first) rather than TorchScript's slot order, so parameter lists line up with Python's (optimizer
// state, checkpoints by index). A tensor reachable twice is listed once, as in Python.
void namedWalk(const Module& m, const std::string& prefix, bool params, bool recurse,
               std::unordered_set<const void*>& seen, std::vector<std::pair<std::string, at::Tensor>>& out) {
  if (params) {
    for (const auto& p : m.named_parameters(false))
      if (seen.insert(p.value.unsafeGetTensorImpl()).second) out.emplace_back(prefix + p.name, p.value);
  } else {
    for (const auto& b : m.named_buffers(false))
      if (seen.insert(b.value.unsafeGetTensorImpl()).second) out.emplace_back(prefix + b.name, b.value);
  }
  if (recurse)
    for (const auto& c : m.named_children()) namedWalk(c.value, prefix + c.name + ".", params, true, seen, out);
}

// namedParameters(h, recurse) / namedBuffers(h, recurse) -> [[name, tensorHandle]]
Napi::Value namedTensors(const Napi::CallbackInfo& info, bool params) {
  Napi::Env env = info.Env();
  bool recurse = !info[1].IsBoolean() || info[1].As<Napi::Boolean>().Value();
  std::unordered_set<const void*> seen;
  std::vector<std::pair<std::string, at::Tensor>> entries;
  namedWalk(moduleAt(info[0]), "", params, recurse, seen, entries);
  std::vector<std::pair<std::string, Napi::Value>> out;
  for (auto& e : entries) out.emplace_back(e.first, Napi::Number::New(env, (double)insertTensor(env, e.second)));
  return pairs(env, out);
}

Napi::Value NamedParameters(const Napi::CallbackInfo& info) {
  return guard(info, "namedParameters", [&]() -> Napi::Value { return namedTensors(info, true); });
}

Napi::Value NamedBuffers(const Napi::CallbackInfo& info) {
  return guard(info, "namedBuffers", [&]() -> Napi::Value { return namedTensors(info, false); });
}

Napi::Value NamedChildren(const Napi::CallbackInfo& info) {
  return guard(info, "namedChildren", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    std::vector<std::pair<std::string, Napi::Value>> out;
    for (const auto& c : moduleAt(info[0]).named_children()) out.emplace_back(c.name, Napi::Number::New(env, (double)insertModule(c.value)));
    return pairs(env, out);
  });
}

Napi::Value StateEntries(const Napi::CallbackInfo& info) {
  return guard(info, "stateDict", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    std::vector<std::pair<std::string, at::Tensor>> entries;
    stateWalk(moduleAt(info[0]), "", entries);
    std::vector<std::pair<std::string, Napi::Value>> out;
    for (auto& e : entries) out.emplace_back(e.first, Napi::Number::New(env, (double)insertTensor(env, e.second)));
    return pairs(env, out);
  });
}

// attributes(h) -> [{name, type, kind}] of the module's own slots.
Napi::Value Attributes(const Napi::CallbackInfo& info) {
  return guard(info, "attributes", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    auto type = moduleAt(info[0]).type();
    auto arr = Napi::Array::New(env, type->numAttributes());
    for (size_t i = 0; i < type->numAttributes(); ++i) {
      auto o = Napi::Object::New(env);
      const auto& t = type->getAttribute(i);
      o.Set("name", type->getAttributeName(i));
      o.Set("type", t->annotation_str());
      const char* kind = type->is_parameter(i) ? "parameter"
                         : type->is_buffer(i)  ? "buffer"
                         : (t->kind() == c10::TypeKind::ClassType && t->expectRef<c10::ClassType>().is_module()) ? "module"
                                                                                                               : "attribute";
      o.Set("kind", kind);
      arr.Set((uint32_t)i, o);
    }
    return arr;
  });
}

Napi::Value HasAttr(const Napi::CallbackInfo& info) {
  return guard(info, "hasAttr", [&]() -> Napi::Value {
    return Napi::Boolean::New(info.Env(), moduleAt(info[0]).hasattr(str(info[1], "name")));
  });
}

Napi::Value GetAttr(const Napi::CallbackInfo& info) {
  return guard(info, "getAttr", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    std::string name = str(info[1], "name");
    if (!m.hasattr(name)) throwTorch("module " + m.type()->repr_str() + " has no attribute '" + name + "'", "E_ATTR");
    return fromIValue(info.Env(), m.attr(name), Form::Objects);
  });
}

Napi::Value SetAttr(const Napi::CallbackInfo& info) {
  return guard(info, "setAttr", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    std::string name = str(info[1], "name");
    auto type = m.type()->findAttribute(name);
    if (!type) throwTorch("module " + m.type()->repr_str() + " has no attribute '" + name + "' (register it first)", "E_ATTR");
    if (type->kind() == c10::TypeKind::ClassType) throwType("setAttr('" + name + "'): replacing a submodule is not supported");
    m.setattr(name, toIValue(info.Env(), info[2], type, name, Form::Objects));
    return info.Env().Undefined();
  });
}

Napi::Value Save(const Napi::CallbackInfo& info) {
  return guard(info, "save", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    std::string path = str(info[1], "path");
    {
      std::ofstream probe(path, std::ios::binary | std::ios::trunc);
      if (!probe.good()) throwTorch("cannot open '" + path + "' for writing", "E_IO");
    }
    try {
      m.save(path);
    } catch (const c10::Error& e) {
      throwTorch("saving to '" + path + "' failed: " + messageOf(e), "E_IO");
    }
    return info.Env().Undefined();
  });
}

// ---- builder ---------------------------------------------------------------------------------

Napi::Value RegisterParameter(const Napi::CallbackInfo& info) {
  return guard(info, "registerParameter", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    requireBuilt(m, "registerParameter");
    std::string name = str(info[1], "name");
    const at::Tensor& t = tensorAt(info.Env(), info[2]);
    bool rg = !info[3].IsBoolean() || info[3].As<Napi::Boolean>().Value();
    // Like nn.Parameter(t): a new leaf sharing t's storage, so the parameter has no autograd history.
    at::Tensor p = t.detach();
    p.requires_grad_(rg);
    m.register_parameter(name, p, /*is_buffer=*/false);
    return info.Env().Undefined();
  });
}

Napi::Value RegisterBuffer(const Napi::CallbackInfo& info) {
  return guard(info, "registerBuffer", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    requireBuilt(m, "registerBuffer");
    std::string name = str(info[1], "name");
    m.register_buffer(name, tensorAt(info.Env(), info[2]).detach());
    return info.Env().Undefined();
  });
}

// registerAttribute(h, name, typeString, value): the type is TorchScript syntax ('int', 'List[float]', ...).
Napi::Value RegisterAttribute(const Napi::CallbackInfo& info) {
  return guard(info, "registerAttribute", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    requireBuilt(m, "registerAttribute");
    std::string name = str(info[1], "name");
    std::string typeStr = str(info[2], "type");
    c10::TypePtr type;
    try {
      type = torch::jit::ScriptTypeParser().parseType(typeStr);
    } catch (const std::exception& e) {
      throwType("registerAttribute('" + name + "'): cannot parse type '" + typeStr + "': " + e.what(), "E_ARG");
    }
    c10::IValue v = toIValue(info.Env(), info[3], type, name, Form::Objects);
    m.register_attribute(name, type, std::move(v));
    return info.Env().Undefined();
  });
}

Napi::Value RegisterModule(const Napi::CallbackInfo& info) {
  return guard(info, "registerModule", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    requireBuilt(m, "registerModule");
    std::string name = str(info[1], "name");
    Module child = moduleAt(info[2]);
    // A cycle would make every recursive walk (parameters, save) loop forever.
    for (const Module& sub : child.modules())
      if (sub._ivalue() == m._ivalue()) throwRange("registerModule('" + name + "'): the child contains this module (cycle)", "E_MODULE");
    m.register_module(name, child);
    return info.Env().Undefined();
  });
}

// A failed Module::define is not rolled back in libtorch 1.13 (the half-defined method stays in the
// class and a later save writes a truncated file), so the source is first compiled into a scratch
// module with the same attributes and methods, in its own compilation unit; only if that succeeds
// is it defined into the real module.
Napi::Value Define(const Napi::CallbackInfo& info) {
  return guard(info, "define", [&]() -> Napi::Value {
    Module m = moduleAt(info[0]);
    requireBuilt(m, "define");
    std::string src = str(info[1], "source");
    auto scratchCu = std::make_shared<torch::jit::CompilationUnit>();
    Module scratch(c10::QualifiedName(*m.type()->name()), scratchCu, /*shouldMangle=*/false);
    auto type = m.type();
    for (size_t i = 0; i < type->numAttributes(); ++i)
      scratch.register_attribute(type->getAttributeName(i), type->getAttribute(i), m._ivalue()->getSlot(i),
                                 type->is_parameter(i), type->is_buffer(i));
    for (size_t i = 0; i < type->numConstants(); ++i) scratch.type()->addConstant(type->getConstantName(i), type->getConstant(i));
    for (const auto& method : m.get_methods()) scratch.clone_method(m, method.name());
    try {
      scratch.define(src);
    } catch (const std::exception& e) {
      throwTorch(std::string("TorchScript compilation failed:\n") + e.what(), "E_COMPILE");
    }
    m.define(src);
    return info.Env().Undefined();
  });
}

}  // namespace

int64_t insertModule(const Module& m) { return g_mods.insert(m); }

void registerJit(Napi::Env env, Napi::Object exports) {
  auto fn = [&](const char* name, Napi::Function::Callback cb) { exports.Set(name, Napi::Function::New(env, cb, name)); };
  fn("jitInit", Init);
  fn("jitLoad", Load);
  fn("jitCreate", Create);
  fn("jitFree", Free);
  fn("jitLiveModules", LiveModules);
  fn("jitClone", Clone);
  fn("jitTypeName", TypeName);
  fn("jitSame", Same);
  fn("jitMethods", Methods);
  fn("jitSchema", Schema);
  fn("jitCode", Code);
  fn("jitCall", Call);
  fn("jitCallAsync", CallAsync);
  fn("jitSetOptimize", SetOptimize);
  fn("jitTrain", Train);
  fn("jitIsTraining", IsTraining);
  fn("jitTo", To);
  fn("jitNamedParameters", NamedParameters);
  fn("jitNamedBuffers", NamedBuffers);
  fn("jitNamedChildren", NamedChildren);
  fn("jitStateEntries", StateEntries);
  fn("jitAttributes", Attributes);
  fn("jitHasAttr", HasAttr);
  fn("jitGetAttr", GetAttr);
  fn("jitSetAttr", SetAttr);
  fn("jitSave", Save);
  fn("jitRegisterParameter", RegisterParameter);
  fn("jitRegisterBuffer", RegisterBuffer);
  fn("jitRegisterAttribute", RegisterAttribute);
  fn("jitRegisterModule", RegisterModule);
  fn("jitDefine", Define);
}

}  // namespace tim

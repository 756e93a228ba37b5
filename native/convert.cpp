// The one JS value <-> IValue converter, driven by the type of the schema argument. Used by aten ops
// (Form::Handles) and by TorchScript methods and attributes (Form::Objects) alike, so both accept
// the same JS values; only how a tensor or module is named differs (common.h).
#include "common.h"
#include <torch/csrc/jit/api/module.h>
#include <ATen/core/jit_type.h>
#include <cmath>
#include <sstream>

namespace tim {

namespace {
Napi::FunctionReference g_wrapTensor, g_wrapModule, g_tensorClass;

bool isTensorObject(const Napi::Value& v) {
  return v.IsObject() && !g_tensorClass.IsEmpty() && v.As<Napi::Object>().InstanceOf(g_tensorClass.Value());
}

// A tensor argument: a handle number (Handles) or a Tensor object (Objects). Handles carry a
// generation above bit 24 and can exceed int32 (handle_table.h): they are read whole.
const at::Tensor& tensorArg(Napi::Env env, const Napi::Value& v, const std::string& name, Form form) {
  if (form == Form::Objects) {
    if (!isTensorObject(v)) throwType(name + ": expected a Tensor");
    return tensorAt(env, v.As<Napi::Object>().Get("_h"));
  }
  const at::Tensor* t = tryTensorAt(handleFrom(v));
  if (t) return *t;
  if (v.IsNull() || v.IsUndefined()) throwType(name + ": expected a Tensor, got " + (v.IsNull() ? "null" : "undefined"));
  return tensorAt(env, v);  // throws the error for what v is
}

std::string item(const std::string& name, size_t i) { return name + "[" + std::to_string(i) + "]"; }
}  // namespace

void setObjectForm(Napi::Function wrapTensor, Napi::Function wrapModule, Napi::Function tensorClass) {
  g_wrapTensor = Napi::Persistent(wrapTensor);
  g_wrapModule = Napi::Persistent(wrapModule);
  g_tensorClass = Napi::Persistent(tensorClass);
  // Process-lifetime references: never deleted from static destructors after the env is gone.
  g_wrapTensor.SuppressDestruct();
  g_wrapModule.SuppressDestruct();
  g_tensorClass.SuppressDestruct();
}

// Numbers, by far the most common, take one napi call (it fails for anything else).
static bool numberOf(const Napi::Value& v, double& d) { return napi_get_value_double(v.Env(), v, &d) == napi_ok; }

static int64_t toInt(const Napi::Value& v, const std::string& name) {
  double d;
  if (!numberOf(v, d)) {
    if (v.IsBigInt()) {
      bool lossless = true;
      int64_t x = v.As<Napi::BigInt>().Int64Value(&lossless);
      if (!lossless) throwRange(name + ": BigInt out of int64 range");
      return x;
    }
    if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1 : 0;
    throwType(name + ": expected an integer");
  }
  // a fraction where an integer belongs is a wrong-type mistake, as in Python (TypeError)
  if (!std::isfinite(d) || d != std::floor(d)) {
    std::ostringstream s;
    s << d;
    throwType(name + ": expected an integer, got " + s.str());
  }
  if (std::fabs(d) > 9007199254740992.0) throwRange(name + ": integer beyond 2^53, pass a BigInt");
  return (int64_t)d;
}

static double toDouble(const Napi::Value& v, const std::string& name) {
  double d;
  if (numberOf(v, d)) return d;
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1.0 : 0.0;
  if (v.IsBigInt()) {
    bool lossless = true;
    return (double)v.As<Napi::BigInt>().Int64Value(&lossless);
  }
  throwType(name + ": expected a number");
}

// A JS number is an integer Scalar when it has no fraction, like a Python int literal; 2.0 and 2 are
// the same value in JS, so float scalars that are whole numbers promote like ints (documented).
static c10::Scalar toScalar(const Napi::Value& v, const std::string& name) {
  double d;
  if (!numberOf(v, d)) {
    if (v.IsBoolean()) return c10::Scalar(v.As<Napi::Boolean>().Value());
    if (v.IsBigInt()) return c10::Scalar(toInt(v, name));
    throwType(name + ": expected a number or boolean");
  }
  // -0 is the integer 0 here (so t.add(-k) with k = 0 keeps an int tensor int); its sign is lost.
  if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) <= 9007199254740992.0) return c10::Scalar((int64_t)d);
  return c10::Scalar(d);
}

c10::ScalarType scalarTypeFrom(const Napi::Value& v) {
  if (!v.IsNumber()) throwType("expected a dtype");
  int x = v.As<Napi::Number>().Int32Value();
  if (x < 0 || x >= (int)c10::ScalarType::NumOptions) throwRange("unknown dtype code " + std::to_string(x));
  return (c10::ScalarType)x;
}

c10::Device deviceFrom(const Napi::Value& v) {
  if (!v.IsString()) throwType("expected a device string such as 'cpu' or 'cuda:0'");
  std::string s = v.As<Napi::String>().Utf8Value();
  try {
    return c10::Device(s);
  } catch (const c10::Error&) {
    throwRange("invalid device '" + s + "' (expected 'cpu', 'cuda' or 'cuda:N')", "E_DEVICE");
  }
}

std::vector<int64_t> intListFrom(const Napi::Value& v, const char* what) {
  std::vector<int64_t> out;
  if (v.IsNumber() || v.IsBigInt()) {
    out.push_back(toInt(v, what));
    return out;
  }
  if (!v.IsArray()) throwType(std::string(what) + ": expected an array of integers");
  auto arr = v.As<Napi::Array>();
  uint32_t n = arr.Length();
  out.reserve(n);
  for (uint32_t i = 0; i < n; ++i) out.push_back(toInt(arr.Get(i), what));
  return out;
}

c10::IValue toIValue(Napi::Env env, const Napi::Value& v, const c10::TypePtr& type, const std::string& name, Form form) {
  using K = c10::TypeKind;
  switch (type->kind()) {
    case K::OptionalType:
      if (v.IsUndefined() || v.IsNull()) return c10::IValue();
      return toIValue(env, v, type->castRaw<c10::OptionalType>()->getElementType(), name, form);
    case K::TensorType:
      return tensorArg(env, v, name, form);
    case K::ListType: {
      auto elem = type->castRaw<c10::ListType>()->getElementType();
      if (!v.IsArray()) {
        // a lone number for int[] / float[], as in aten's Python bindings (size=3)
        if (elem->kind() == K::IntType && (v.IsNumber() || v.IsBigInt())) return intListFrom(v, name.c_str());
        if (elem->kind() == K::FloatType && v.IsNumber()) return std::vector<double>{toDouble(v, name)};
        throwType(name + ": expected an array");
      }
      auto arr = v.As<Napi::Array>();
      uint32_t n = arr.Length();
      if (elem->kind() == K::IntType && form == Form::Handles) return intListFrom(v, name.c_str());
      if (elem->kind() == K::TensorType) {
        std::vector<at::Tensor> ts;
        ts.reserve(n);
        for (uint32_t i = 0; i < n; ++i) {
          Napi::Value e = arr.Get(i);
          ts.push_back(form == Form::Handles ? tensorAt(env, e) : tensorArg(env, e, item(name, i), form));
        }
        return ts;
      }
      if (elem->kind() == K::OptionalType &&
          elem->castRaw<c10::OptionalType>()->getElementType()->kind() == K::TensorType) {
        c10::List<c10::optional<at::Tensor>> ts;
        for (uint32_t i = 0; i < n; ++i) {
          Napi::Value e = arr.Get(i);
          if (e.IsNull() || e.IsUndefined()) ts.push_back(c10::nullopt);
          else ts.push_back(form == Form::Handles ? tensorAt(env, e) : tensorArg(env, e, item(name, i), form));
        }
        return ts;
      }
      if (elem->kind() == K::FloatType && form == Form::Handles) {
        std::vector<double> ds;
        for (uint32_t i = 0; i < n; ++i) ds.push_back(toDouble(arr.Get(i), name));
        return ds;
      }
      c10::impl::GenericList list(elem);
      for (uint32_t i = 0; i < n; ++i) list.push_back(toIValue(env, arr.Get(i), elem, item(name, i), form));
      return list;
    }
    case K::TupleType: {
      if (!v.IsArray()) throwType(name + ": expected an array for a tuple");
      auto arr = v.As<Napi::Array>();
      auto elems = type->castRaw<c10::TupleType>()->elements();
      if (arr.Length() != elems.size())
        throwType(name + ": expected a tuple of " + std::to_string(elems.size()) + " elements, got " +
                  std::to_string(arr.Length()));
      std::vector<c10::IValue> items;
      for (size_t i = 0; i < elems.size(); ++i) items.push_back(toIValue(env, arr.Get((uint32_t)i), elems[i], item(name, i), form));
      return c10::ivalue::Tuple::create(std::move(items));
    }
    case K::DictType: {
      auto dt = type->castRaw<c10::DictType>();
      if (!v.IsObject() || v.IsArray() || isTensorObject(v)) throwType(name + ": expected an object for a dict");
      auto kk = dt->getKeyType()->kind();
      if (kk != K::StringType && kk != K::IntType) throwType(name + ": only Dict[str, T] and Dict[int, T] are supported");
      c10::impl::GenericDict dict(dt->getKeyType(), dt->getValueType());
      auto obj = v.As<Napi::Object>();
      auto keys = obj.GetPropertyNames();
      for (uint32_t i = 0; i < keys.Length(); ++i) {
        Napi::Value kv = keys.Get(i);
        std::string k = kv.ToString().Utf8Value();
        c10::IValue key;
        if (kk == K::StringType) {
          key = k;
        } else {
          char* end = nullptr;
          long long x = std::strtoll(k.c_str(), &end, 10);
          if (k.empty() || *end) throwType(name + ": key '" + k + "' is not an integer");
          key = (int64_t)x;
        }
        dict.insert(key, toIValue(env, obj.Get(kv), dt->getValueType(), name + "." + k, form));
      }
      return dict;
    }
    case K::AnyType:
      if (v.IsNull() || v.IsUndefined()) return c10::IValue();
      if (form == Form::Objects && isTensorObject(v)) return tensorArg(env, v, name, form);
      if (v.IsBoolean()) return v.As<Napi::Boolean>().Value();
      if (v.IsString()) return v.As<Napi::String>().Utf8Value();
      if (v.IsNumber()) {
        double d = v.As<Napi::Number>().DoubleValue();
        if (d == std::floor(d) && std::fabs(d) < 9e15) return (int64_t)d;
        return d;
      }
      throwType(name + ": cannot convert this value to Any");
    default:
      break;
  }
  // Plain values. A Tensor object where one is expected is a mistake worth naming.
  if (form == Form::Objects && isTensorObject(v)) throwType(name + ": expected " + type->repr_str() + ", got a Tensor");
  switch (type->kind()) {
    case K::IntType:
    case K::ScalarTypeType:
    case K::LayoutType:
    case K::MemoryFormatType:
      return toInt(v, name);
    case K::FloatType:
      return toDouble(v, name);
    case K::BoolType:
      if (!v.IsBoolean()) throwType(name + ": expected a boolean");
      return v.As<Napi::Boolean>().Value();
    case K::NumberType:
      return toScalar(v, name);
    case K::StringType:
      if (!v.IsString()) throwType(name + ": expected a string");
      return v.As<Napi::String>().Utf8Value();
    case K::DeviceObjType:
      return deviceFrom(v);
    case K::GeneratorType:
      if (!v.IsUndefined() && !v.IsNull()) throwType(name + ": explicit generators are not supported");
      return c10::IValue();
    case K::NoneType:
      return c10::IValue();
    default:
      throwType(name + ": unsupported argument type " + type->str());
  }
}

static Napi::Value tensorToJs(Napi::Env env, const at::Tensor& t, Form form) {
  if (!t.defined()) return env.Null();
  Napi::Value h = Napi::Number::New(env, (double)insertTensor(env, t));
  return form == Form::Handles ? h : g_wrapTensor.Call({h});
}

Napi::Value fromIValue(Napi::Env env, const c10::IValue& v, Form form) {
  if (v.isTensor()) return tensorToJs(env, v.toTensor(), form);
  if (v.isNone()) return env.Null();
  if (v.isInt()) return Napi::Number::New(env, (double)v.toInt());
  if (v.isDouble()) return Napi::Number::New(env, v.toDouble());
  if (v.isBool()) return Napi::Boolean::New(env, v.toBool());
  if (v.isString()) return Napi::String::New(env, v.toStringRef());
  if (v.isDevice()) return Napi::String::New(env, v.toDevice().str());
  if (v.isTensorList() && form == Form::Handles) {
    // handles as the op returned them; an undefined tensor is -1 (lib/torch maps it)
    auto list = v.toTensorList();
    auto arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) arr.Set((uint32_t)i, Napi::Number::New(env, (double)insertTensor(env, list.get(i))));
    return arr;
  }
  if (v.isList()) {
    auto list = v.toListRef();
    auto arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) arr.Set((uint32_t)i, fromIValue(env, list[i], form));
    return arr;
  }
  if (v.isTuple()) {
    const auto& elems = v.toTupleRef().elements();
    auto arr = Napi::Array::New(env, elems.size());
    for (size_t i = 0; i < elems.size(); ++i) arr.Set((uint32_t)i, fromIValue(env, elems[i], form));
    return arr;
  }
  if (v.isGenericDict()) {
    auto obj = Napi::Object::New(env);
    for (const auto& kv : v.toGenericDict()) {
      const auto& k = kv.key();
      if (!k.isString() && !k.isInt()) throwType("cannot convert a dict with " + k.tagKind() + " keys to JS");
      obj.Set(k.isString() ? k.toStringRef() : std::to_string(k.toInt()), fromIValue(env, kv.value(), form));
    }
    return obj;
  }
  if (v.isModule() && form == Form::Objects)
    return g_wrapModule.Call({Napi::Number::New(env, (double)insertModule(v.toModule()))});
  throwType("cannot convert a " + v.tagKind() + " value to JS");
}

}  // namespace tim

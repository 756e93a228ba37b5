// JS value <-> IValue conversion, driven by the type of the schema argument. Used by aten ops and
// by TorchScript methods alike, so both accept the same JS values.
#include "common.h"
#include <ATen/core/jit_type.h>
#include <cmath>
#include <sstream>

namespace tim {

static int64_t toInt(const Napi::Value& v, const std::string& name) {
  if (v.IsBigInt()) {
    bool lossless = true;
    int64_t x = v.As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) throwRange(name + ": BigInt out of int64 range");
    return x;
  }
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1 : 0;
  if (!v.IsNumber()) throwType(name + ": expected an integer");
  double d = v.As<Napi::Number>().DoubleValue();
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
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1.0 : 0.0;
  if (v.IsBigInt()) {
    bool lossless = true;
    return (double)v.As<Napi::BigInt>().Int64Value(&lossless);
  }
  if (!v.IsNumber()) throwType(name + ": expected a number");
  return v.As<Napi::Number>().DoubleValue();
}

// A JS number is an integer Scalar when it has no fraction, like a Python int literal; 2.0 and 2 are
// the same value in JS, so float scalars that are whole numbers promote like ints (documented).
static c10::Scalar toScalar(const Napi::Value& v, const std::string& name) {
  if (v.IsBoolean()) return c10::Scalar(v.As<Napi::Boolean>().Value());
  if (v.IsBigInt()) return c10::Scalar(toInt(v, name));
  if (!v.IsNumber()) throwType(name + ": expected a number or boolean");
  double d = v.As<Napi::Number>().DoubleValue();
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

c10::IValue toIValue(Napi::Env env, const Napi::Value& v, const c10::TypePtr& type, const std::string& name) {
  using K = c10::TypeKind;
  switch (type->kind()) {
    case K::OptionalType:
      if (v.IsUndefined() || v.IsNull()) return c10::IValue();
      return toIValue(env, v, type->castRaw<c10::OptionalType>()->getElementType(), name);
    case K::TensorType:
      if (v.IsNull() || v.IsUndefined()) throwType(name + ": expected a Tensor, got " + (v.IsNull() ? "null" : "undefined"));
      return tensorAt(env, v);
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
    case K::ListType: {
      auto elem = type->castRaw<c10::ListType>()->getElementType();
      if (elem->kind() == K::IntType) return intListFrom(v, name.c_str());
      if (!v.IsArray()) {
        if (elem->kind() == K::FloatType && v.IsNumber()) return std::vector<double>{toDouble(v, name)};
        throwType(name + ": expected an array");
      }
      auto arr = v.As<Napi::Array>();
      uint32_t n = arr.Length();
      if (elem->kind() == K::TensorType) {
        std::vector<at::Tensor> ts;
        ts.reserve(n);
        for (uint32_t i = 0; i < n; ++i) ts.push_back(tensorAt(env, arr.Get(i)));
        return ts;
      }
      if (elem->kind() == K::FloatType) {
        std::vector<double> ds;
        for (uint32_t i = 0; i < n; ++i) ds.push_back(toDouble(arr.Get(i), name));
        return ds;
      }
      if (elem->kind() == K::BoolType) {
        c10::List<bool> bs;
        for (uint32_t i = 0; i < n; ++i) bs.push_back(toIValue(env, arr.Get(i), elem, name).toBool());
        return bs;
      }
      if (elem->kind() == K::OptionalType &&
          elem->castRaw<c10::OptionalType>()->getElementType()->kind() == K::TensorType) {
        c10::List<c10::optional<at::Tensor>> ts;
        for (uint32_t i = 0; i < n; ++i) {
          Napi::Value e = arr.Get(i);
          if (e.IsNull() || e.IsUndefined()) ts.push_back(c10::nullopt);
          else ts.push_back(tensorAt(env, e));
        }
        return ts;
      }
      c10::impl::GenericList list(elem);
      for (uint32_t i = 0; i < n; ++i) list.push_back(toIValue(env, arr.Get(i), elem, name));
      return list;
    }
    case K::TupleType: {
      if (!v.IsArray()) throwType(name + ": expected an array for a tuple");
      auto arr = v.As<Napi::Array>();
      auto elems = type->castRaw<c10::TupleType>()->elements();
      if (arr.Length() != elems.size())
        throwType(name + ": expected a tuple of " + std::to_string(elems.size()) + " elements");
      std::vector<c10::IValue> items;
      for (size_t i = 0; i < elems.size(); ++i) items.push_back(toIValue(env, arr.Get(i), elems[i], name));
      return c10::ivalue::Tuple::create(std::move(items));
    }
    case K::DictType: {
      if (!v.IsObject()) throwType(name + ": expected an object for a dict");
      auto dt = type->castRaw<c10::DictType>();
      if (dt->getKeyType()->kind() != K::StringType) throwType(name + ": only Dict[str, T] is supported");
      c10::impl::GenericDict dict(dt->getKeyType(), dt->getValueType());
      auto obj = v.As<Napi::Object>();
      auto keys = obj.GetPropertyNames();
      for (uint32_t i = 0; i < keys.Length(); ++i) {
        std::string k = keys.Get(i).As<Napi::String>().Utf8Value();
        dict.insert(k, toIValue(env, obj.Get(k), dt->getValueType(), name + "." + k));
      }
      return dict;
    }
    case K::AnyType:
      if (v.IsNull() || v.IsUndefined()) return c10::IValue();
      if (v.IsBoolean()) return v.As<Napi::Boolean>().Value();
      if (v.IsString()) return v.As<Napi::String>().Utf8Value();
      if (v.IsNumber()) {
        double d = v.As<Napi::Number>().DoubleValue();
        if (d == std::floor(d) && std::fabs(d) < 9e15) return (int64_t)d;
        return d;
      }
      throwType(name + ": cannot convert this value to Any");
    default:
      throwType(name + ": unsupported argument type " + type->str());
  }
}

Napi::Value fromIValue(Napi::Env env, const c10::IValue& v) {
  if (v.isTensor()) {
    const at::Tensor& t = v.toTensor();
    if (!t.defined()) return env.Null();
    return Napi::Number::New(env, insertTensor(env, t));
  }
  if (v.isNone()) return env.Null();
  if (v.isInt()) return Napi::Number::New(env, (double)v.toInt());
  if (v.isDouble()) return Napi::Number::New(env, v.toDouble());
  if (v.isBool()) return Napi::Boolean::New(env, v.toBool());
  if (v.isString()) return Napi::String::New(env, v.toStringRef());
  if (v.isTensorList()) {
    auto list = v.toTensorList();
    auto arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) arr.Set((uint32_t)i, Napi::Number::New(env, insertTensor(env, list.get(i))));
    return arr;
  }
  if (v.isList()) {
    auto list = v.toListRef();
    auto arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); ++i) arr.Set((uint32_t)i, fromIValue(env, list[i]));
    return arr;
  }
  if (v.isTuple()) {
    const auto& elems = v.toTupleRef().elements();
    auto arr = Napi::Array::New(env, elems.size());
    for (size_t i = 0; i < elems.size(); ++i) arr.Set((uint32_t)i, fromIValue(env, elems[i]));
    return arr;
  }
  if (v.isGenericDict()) {
    auto obj = Napi::Object::New(env);
    for (const auto& kv : v.toGenericDict()) {
      std::string key = kv.key().isString() ? kv.key().toStringRef() : kv.key().tagKind() == "Int" ? std::to_string(kv.key().toInt()) : "?";
      obj.Set(key, fromIValue(env, kv.value()));
    }
    return obj;
  }
  if (v.isDevice()) return Napi::String::New(env, v.toDevice().str());
  throwType("cannot convert a " + v.tagKind() + " result to JS");
}

}  // namespace tim

// Tensors in and out of JS memory, and the properties JS reads. Everything else a tensor does goes
// through the generic op dispatcher (ops.cpp).
#include "common.h"
#include <cstring>
#include <torch/csrc/autograd/function.h>

namespace tim {


// fromData(bytes: ArrayBufferView | ArrayBuffer, dtype, shape, copy: boolean)
// Zero-copy (copy=false) needs the view aligned for the dtype; the tensor then keeps the
// ArrayBuffer alive through a napi reference released when the storage dies.
static Napi::Value FromData(const Napi::CallbackInfo& info) {
  return guard(info, "fromData", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    // buffers released by storages freed since the last scope end: let them go now (a single
    // dispose() does not drain the queue)
    drainDeferredReleases(env);
    void* data = nullptr;
    size_t byteLength = 0;
    Napi::Object holder;
    if (info[0].IsTypedArray()) {
      auto ta = info[0].As<Napi::TypedArray>();
      auto ab = ta.ArrayBuffer();
      data = static_cast<uint8_t*>(ab.Data()) + ta.ByteOffset();
      byteLength = ta.ByteLength();
      holder = ab;
    } else if (info[0].IsDataView()) {
      auto dv = info[0].As<Napi::DataView>();
      data = static_cast<uint8_t*>(dv.ArrayBuffer().Data()) + dv.ByteOffset();
      byteLength = dv.ByteLength();
      holder = dv.ArrayBuffer();
    } else if (info[0].IsArrayBuffer()) {
      auto ab = info[0].As<Napi::ArrayBuffer>();
      data = ab.Data();
      byteLength = ab.ByteLength();
      holder = ab;
    } else {
      throwType("expected an ArrayBuffer or a TypedArray");
    }
    c10::ScalarType st = scalarTypeFrom(info[1]);
    std::vector<int64_t> shape = intListFrom(info[2], "shape");
    bool copy = info[3].IsBoolean() ? info[3].As<Napi::Boolean>().Value() : true;
    int64_t numel = 1;
    for (int64_t d : shape) {
      if (d < 0) throwRange("shape has a negative size");
      if (d != 0 && numel > INT64_MAX / d) throwRange("shape is too large");
      numel *= d;
    }
    size_t es = c10::elementSize(st);
    if ((size_t)numel > SIZE_MAX / es || (size_t)numel * es != byteLength)
      throwRange("buffer holds " + std::to_string(byteLength) + " bytes but shape and dtype need " +
                 std::to_string((size_t)numel * es), "E_SHAPE");
    auto opts = at::TensorOptions().dtype(st);
    at::Tensor t;
    if (!copy && byteLength > 0 && reinterpret_cast<uintptr_t>(data) % es == 0) {
      napi_ref ref;
      napi_create_reference(env, holder, 1, &ref);
      t = at::from_blob(data, shape, [ref](void*) { deferRelease(ref); }, opts);
    } else {
      t = at::empty(shape, opts);
      if (byteLength) std::memcpy(t.data_ptr(), data, byteLength);
    }
    return Napi::Number::New(env, insertTensor(env, std::move(t)));
  });
}

// Copies a tensor's elements (as laid out in row-major order) into a fresh ArrayBuffer.
static Napi::Value ToBuffer(const Napi::CallbackInfo& info) {
  return guard(info, "toBuffer", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    at::Tensor t = tensorAt(env, info[0]).detach();
    if (t.is_complex()) throwType("complex tensors cannot be read into JS", "E_DTYPE");
    t = t.to(at::kCPU).contiguous();
    size_t bytes = t.nbytes();
    auto ab = Napi::ArrayBuffer::New(env, bytes);
    if (bytes) std::memcpy(ab.Data(), t.data_ptr(), bytes);
    return ab;
  });
}

static Napi::Value Item(const Napi::CallbackInfo& info) {
  return guard(info, "item", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const at::Tensor& t = tensorAt(env, info[0]);
    if (t.numel() != 1)
      throwTorch("item() needs a tensor with one element, got " + describeTensor(t), "E_SHAPE");
    c10::Scalar s = t.item();
    if (s.isBoolean()) return Napi::Boolean::New(env, s.toBool());
    if (s.isIntegral(false)) return Napi::Number::New(env, (double)s.toLong());
    return Napi::Number::New(env, s.toDouble());
  });
}

static Napi::Value Shape(const Napi::CallbackInfo& info) {
  return guard(info, "shape", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const at::Tensor& t = tensorAt(env, info[0]);
    auto sizes = t.sizes();
    auto arr = Napi::Array::New(env, sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) arr.Set((uint32_t)i, Napi::Number::New(env, (double)sizes[i]));
    return arr;
  });
}

static Napi::Value Strides(const Napi::CallbackInfo& info) {
  return guard(info, "strides", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const at::Tensor& t = tensorAt(env, info[0]);
    auto st = t.strides();
    auto arr = Napi::Array::New(env, st.size());
    for (size_t i = 0; i < st.size(); ++i) arr.Set((uint32_t)i, Napi::Number::New(env, (double)st[i]));
    return arr;
  });
}

static Napi::Value Dtype(const Napi::CallbackInfo& info) {
  return guard(info, "dtype", [&]() -> Napi::Value {
    return Napi::Number::New(info.Env(), (int)tensorAt(info.Env(), info[0]).scalar_type());
  });
}

static Napi::Value Device(const Napi::CallbackInfo& info) {
  return guard(info, "device", [&]() -> Napi::Value {
    return Napi::String::New(info.Env(), tensorAt(info.Env(), info[0]).device().str());
  });
}

static Napi::Value RequiresGrad(const Napi::CallbackInfo& info) {
  return guard(info, "requiresGrad", [&]() -> Napi::Value {
    return Napi::Boolean::New(info.Env(), tensorAt(info.Env(), info[0]).requires_grad());
  });
}

static Napi::Value SetRequiresGrad(const Napi::CallbackInfo& info) {
  return guard(info, "requiresGrad_", [&]() -> Napi::Value {
    at::Tensor t = tensorAt(info.Env(), info[0]);
    if (!info[1].IsBoolean()) throwType("requiresGrad_ expects a boolean");
    t.set_requires_grad(info[1].As<Napi::Boolean>().Value());
    return info.Env().Undefined();
  });
}

// Properties that rarely change, in one call: [dtype, device, isContiguous, isLeaf, dataPtr offset].
static Napi::Value Info(const Napi::CallbackInfo& info) {
  return guard(info, "info", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    const at::Tensor& t = tensorAt(env, info[0]);
    auto o = Napi::Object::New(env);
    o.Set("isContiguous", t.is_contiguous());
    o.Set("isLeaf", t.is_leaf());
    o.Set("storageOffset", (double)t.storage_offset());
    o.Set("nbytes", (double)t.nbytes());
    o.Set("gradFn", t.grad_fn() ? Napi::Value(Napi::String::New(env, t.grad_fn()->name())) : env.Null());
    return o;
  });
}

void registerTensor(Napi::Env env, Napi::Object exports) {
  exports.Set("fromData", Napi::Function::New(env, FromData, "fromData"));
  exports.Set("toBuffer", Napi::Function::New(env, ToBuffer, "toBuffer"));
  exports.Set("item", Napi::Function::New(env, Item, "item"));
  exports.Set("shape", Napi::Function::New(env, Shape, "shape"));
  exports.Set("strides", Napi::Function::New(env, Strides, "strides"));
  exports.Set("dtype", Napi::Function::New(env, Dtype, "dtype"));
  exports.Set("device", Napi::Function::New(env, Device, "device"));
  exports.Set("requiresGrad", Napi::Function::New(env, RequiresGrad, "requiresGrad"));
  exports.Set("setRequiresGrad", Napi::Function::New(env, SetRequiresGrad, "setRequiresGrad"));
  exports.Set("info", Napi::Function::New(env, Info, "info"));
}

}  // namespace tim

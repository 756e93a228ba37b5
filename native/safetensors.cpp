// Safetensors files: mapping and reading tensors, and writing a file's bytes (stWrite writes the exact
// path it is given and fsyncs it; the temporary name, rename and folder fsync are lib/torch/io/atomic.ts's).
//
// The header's JSON is parsed and validated in TypeScript (lib/torch/io/safetensors.ts); this file
// never trusts what it is given: every tensor request is checked again against the file's real
// size (offsets in bounds, dtype x shape == byte length, no overflow) before a byte is touched.
//
// Zero-copy tensors point into a private copy-on-write mapping of the file (MAP_PRIVATE with
// PROT_WRITE): libtorch has no read-only tensors, and an in-place op on a loaded weight must
// neither crash nor modify the file. Each such tensor's deleter holds a shared_ptr to the mapping,
// so closing the file object early never leaves a dangling tensor.
#include "common.h"
#include "async.h"
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <memory>
#include <mutex>
#include <random>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

namespace tim {
namespace {

constexpr uint64_t kMaxHeader = 100000000;  // the reference implementation's bound (100 MB)

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors stores little-endian data; big-endian hosts would need byte swapping"
#endif

[[noreturn]] void ioError(const std::string& what, const std::string& path, int err) {
  throwTorch(what + " '" + path + "': " + std::strerror(err), "E_IO");
}

// An open safetensors file: its descriptor (for pread) and, once a zero-copy tensor is asked
// for, a mapping of the whole file. Shared by the JS file object and every zero-copy tensor.
struct StFile {
  std::string path;
  int fd = -1;
  uint64_t size = 0;       // file size at open time; all bounds are checked against it
  uint64_t dataStart = 0;  // 8 + header length
  void* map = nullptr;
  std::mutex mapMutex;     // a worker thread (loadAsync) may map concurrently with the JS thread

  ~StFile() {
    if (map) munmap(map, size);
    if (fd >= 0) close(fd);
  }

  const uint8_t* mapped() {
    std::lock_guard<std::mutex> lock(mapMutex);
    if (!map) {
      // MAP_NORESERVE: a private writable mapping of a file larger than RAM must not be refused
      // by overcommit accounting; pages only cost memory once written.
      void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_NORESERVE, fd, 0);
      if (p == MAP_FAILED) ioError("cannot map", path, errno);
      map = p;
    }
    return static_cast<const uint8_t*>(map);
  }
};

// What JS holds: the file can be closed (fd and, when no tensor uses it, the mapping released)
// while zero-copy tensors keep their own shared_ptr.
struct StHolder {
  std::shared_ptr<StFile> file;
};

StHolder* holderFrom(const Napi::Value& v) {
  if (!v.IsExternal()) throwType("expected a safetensors file handle");
  return v.As<Napi::External<StHolder>>().Data();
}

std::shared_ptr<StFile> fileFrom(const Napi::Value& v) {
  StHolder* h = holderFrom(v);
  if (!h->file) throwTorch("safetensors file is closed", "E_IO");
  return h->file;
}

void preadAll(const StFile& f, uint8_t* dst, uint64_t len, uint64_t offset) {
  while (len > 0) {
    size_t chunk = (size_t)std::min<uint64_t>(len, 1u << 30);
    ssize_t r = pread(f.fd, dst, chunk, (off_t)offset);
    if (r < 0) {
      if (errno == EINTR) continue;
      ioError("cannot read", f.path, errno);
    }
    if (r == 0) throwTorch("safetensors file '" + f.path + "' was truncated while open", "E_IO");
    dst += r;
    len -= (uint64_t)r;
    offset += (uint64_t)r;
  }
}

double numberArg(const Napi::Value& v, const char* what) {
  if (!v.IsNumber()) throwType(std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  // Integers only, and exactly representable (offsets up to 2^53 bytes).
  if (!(d >= 0) || d > 9007199254740991.0 || d != (double)(uint64_t)d)
    throwRange(std::string(what) + " must be a non-negative integer", "E_FORMAT");
  return d;
}

bool supported(c10::ScalarType st) {
  switch (st) {
    case at::kDouble: case at::kFloat: case at::kHalf: case at::kBFloat16: case at::kLong:
    case at::kInt: case at::kShort: case at::kChar: case at::kByte: case at::kBool:
      return true;
    default:
      return false;
  }
}

// One requested tensor, validated against the file.
struct Request {
  c10::ScalarType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;  // relative to the data section
};

Request requestFrom(const StFile& f, const Napi::Value& dtype, const Napi::Value& shape,
                    const Napi::Value& begin, const Napi::Value& end) {
  Request r;
  r.dtype = scalarTypeFrom(dtype);
  if (!supported(r.dtype)) throwType("dtype not supported in safetensors files", "E_DTYPE");
  if (!shape.IsArray()) throwType("shape must be an array");
  auto arr = shape.As<Napi::Array>();
  if (arr.Length() > 64) throwRange("too many dimensions", "E_FORMAT");
  uint64_t numel = 1;
  bool overflow = false;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    double d = numberArg(arr.Get(i), "shape entry");
    uint64_t u = (uint64_t)d;
    r.shape.push_back((int64_t)u);
    if (u != 0 && numel > UINT64_MAX / u) overflow = true;
    else numel *= u;
  }
  bool hasZero = false;
  for (int64_t d : r.shape) hasZero |= d == 0;
  if (hasZero) numel = 0, overflow = false;
  r.begin = (uint64_t)numberArg(begin, "begin offset");
  r.end = (uint64_t)numberArg(end, "end offset");
  uint64_t dataLen = f.size - f.dataStart;
  if (r.begin > r.end || r.end > dataLen)
    throwTorch("tensor offsets [" + std::to_string(r.begin) + ", " + std::to_string(r.end) +
                   "] are outside the data section (" + std::to_string(dataLen) + " bytes)", "E_FORMAT");
  uint64_t es = c10::elementSize(r.dtype);
  if (overflow || numel > UINT64_MAX / es || numel * es != r.end - r.begin)
    throwTorch("tensor byte length does not match its dtype and shape", "E_FORMAT");
  return r;
}

// Zero-copy when the bytes are aligned for the dtype; otherwise (or when asked) a copy read with
// pread, which never faults even if the file is truncated behind our back.
at::Tensor makeTensor(const std::shared_ptr<StFile>& f, const Request& r, bool copy) {
  auto opts = at::TensorOptions().dtype(r.dtype);
  uint64_t nbytes = r.end - r.begin;
  if (!copy && nbytes > 0) {
    const uint8_t* p = f->mapped() + f->dataStart + r.begin;
    if (reinterpret_cast<uintptr_t>(p) % c10::elementSize(r.dtype) == 0) {
      std::shared_ptr<StFile> keep = f;
      return at::from_blob(const_cast<uint8_t*>(p), r.shape, [keep](void*) mutable { keep.reset(); }, opts);
    }
  }
  at::Tensor t = at::empty(r.shape, opts);
  if (nbytes) preadAll(*f, static_cast<uint8_t*>(t.data_ptr()), nbytes, f->dataStart + r.begin);
  return t;
}

// open(path, raw?) -> { file, size, header: Buffer }. Checks the 8-byte length prefix against the
// 100 MB bound and the real file size before allocating anything for the header.
Napi::Value Open(const Napi::CallbackInfo& info) {
  return guard(info, "safetensors open", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    if (!info[0].IsString()) throwType("path must be a string");
    auto f = std::make_shared<StFile>();
    f->path = info[0].As<Napi::String>().Utf8Value();
    if (f->path.find('\0') != std::string::npos) throwType("path contains a NUL byte");
    f->fd = open(f->path.c_str(), O_RDONLY | O_CLOEXEC);
    if (f->fd < 0) ioError("cannot open", f->path, errno);
    struct stat st;
    if (fstat(f->fd, &st) != 0) ioError("cannot stat", f->path, errno);
    if (!S_ISREG(st.st_mode)) throwTorch("'" + f->path + "' is not a regular file", "E_IO");
    f->size = (uint64_t)st.st_size;
    // raw: a plain byte range reader (torch.save zip checkpoints, parsed in TS); offsets are
    // then relative to the start of the file.
    bool raw = info[1].IsBoolean() && info[1].As<Napi::Boolean>().Value();
    if (raw) {
      if (f->size == 0) throwTorch("'" + f->path + "' is empty", "E_FORMAT");
      auto* holder = new StHolder{f};
      auto o = Napi::Object::New(env);
      o.Set("file", Napi::External<StHolder>::New(env, holder, [](Napi::Env, StHolder* h) { delete h; }));
      o.Set("size", Napi::Number::New(env, (double)f->size));
      return o;
    }
    if (f->size < 8)
      throwTorch("'" + f->path + "' is not a safetensors file: " + std::to_string(f->size) +
                     " bytes, shorter than the 8-byte header length", "E_FORMAT");
    uint8_t lenBytes[8];
    preadAll(*f, lenBytes, 8, 0);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | lenBytes[i];
    if (n > kMaxHeader)
      throwTorch("'" + f->path + "': safetensors header length " + std::to_string(n) +
                     " exceeds the 100 MB limit (corrupt or not a safetensors file)", "E_FORMAT");
    if (n > f->size - 8)
      throwTorch("'" + f->path + "': safetensors header length " + std::to_string(n) +
                     " runs past the end of the file (" + std::to_string(f->size) + " bytes; truncated?)", "E_FORMAT");
    f->dataStart = 8 + n;
    auto header = Napi::Buffer<uint8_t>::New(env, (size_t)n);
    if (n) preadAll(*f, header.Data(), n, 8);
    auto* holder = new StHolder{f};
    auto ext = Napi::External<StHolder>::New(env, holder, [](Napi::Env, StHolder* h) { delete h; });
    auto o = Napi::Object::New(env);
    o.Set("file", ext);
    o.Set("size", Napi::Number::New(env, (double)f->size));
    o.Set("header", header);
    return o;
  });
}

// close(file): drops the file object's reference; zero-copy tensors keep the mapping alive.
Napi::Value Close(const Napi::CallbackInfo& info) {
  return guard(info, "safetensors close", [&]() -> Napi::Value {
    holderFrom(info[0])->file.reset();
    return info.Env().Undefined();
  });
}

// tensor(file, dtype, shape, begin, end, copy) -> handle
Napi::Value GetTensor(const Napi::CallbackInfo& info) {
  return guard(info, "safetensors get", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    auto f = fileFrom(info[0]);
    Request r = requestFrom(*f, info[1], info[2], info[3], info[4]);
    bool copy = info[5].IsBoolean() && info[5].As<Napi::Boolean>().Value();
    return Napi::Number::New(env, (double)insertTensor(env, makeTensor(f, r, copy)));
  });
}

// readAsync(file, [[dtype, shape, begin, end], ...], copy) -> Promise<handle[]>
// Off the JS thread: copies are read with pread; zero-copy tensors have their pages faulted in
// (one byte per page), so the data is resident when the promise resolves.
Napi::Value ReadAsync(const Napi::CallbackInfo& info) {
  return guard(info, "safetensors loadAsync", [&]() -> Napi::Value {
    auto f = fileFrom(info[0]);
    if (!info[1].IsArray()) throwType("expected an array of tensor requests");
    auto arr = info[1].As<Napi::Array>();
    std::vector<Request> reqs;
    for (uint32_t i = 0; i < arr.Length(); ++i) {
      Napi::Value e = arr.Get(i);
      if (!e.IsArray() || e.As<Napi::Array>().Length() != 4) throwType("bad tensor request");
      auto a = e.As<Napi::Array>();
      reqs.push_back(requestFrom(*f, a.Get(0u), a.Get(1u), a.Get(2u), a.Get(3u)));
    }
    bool copy = info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
    auto out = std::make_shared<std::vector<at::Tensor>>();
    return AsyncTask::start(
        info.Env(), "safetensors loadAsync",
        [f, reqs, copy, out]() {
          long page = sysconf(_SC_PAGESIZE);
          for (const Request& r : reqs) {
            at::Tensor t = makeTensor(f, r, copy);
            if (!copy && t.nbytes() > 0) {
              const volatile uint8_t* p = static_cast<const uint8_t*>(t.data_ptr());
              uint8_t acc = 0;
              for (size_t off = 0; off < t.nbytes(); off += (size_t)page) acc = (uint8_t)(acc ^ p[off]);
              volatile uint8_t sink = acc;
              (void)sink;
            }
            out->push_back(std::move(t));
          }
        },
        [out](Napi::Env env) -> Napi::Value {
          auto arr = Napi::Array::New(env, out->size());
          for (size_t i = 0; i < out->size(); ++i)
            arr.Set((uint32_t)i, Napi::Number::New(env, (double)insertTensor(env, std::move((*out)[i]))));
          out->clear();
          return arr;
        });
  });
}

// ---- writing -------------------------------------------------------------------------------

void writeAll(int fd, const uint8_t* p, uint64_t len, const std::string& path) {
  while (len > 0) {
    size_t chunk = (size_t)std::min<uint64_t>(len, 1u << 30);
    ssize_t w = write(fd, p, chunk);
    if (w < 0) {
      if (errno == EINTR) continue;
      ioError("cannot write", path, errno);
    }
    p += w;
    len -= (uint64_t)w;
  }
}

struct WriteJob {
  std::string path;
  std::vector<uint8_t> header;        // 8-byte length + JSON padded to a multiple of 8
  std::vector<at::Tensor> tensors;    // in file order
  std::vector<uint64_t> nbytes;       // what the header promised for each tensor
  int64_t failAfter = -1;             // test-only fault injection: fail once this many bytes are written
};

// Writes the file at exactly job.path (created or truncated) and fsyncs it. Atomic replacement
// is the caller's: lib/torch/io/atomic.ts passes a temporary path, then renames it over the target
// and removes it on failure (the one rule every writer in the project follows).
void runWrite(WriteJob& job) {
  int fd = open(job.path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) ioError("cannot create", job.path, errno);
  try {
    uint64_t written = 0;
    auto put = [&](const uint8_t* p, uint64_t len) {
      if (job.failAfter >= 0 && written + len > (uint64_t)job.failAfter) {
        writeAll(fd, p, (uint64_t)job.failAfter - written, job.path);
        throwTorch("cannot write '" + job.path + "': injected failure (test)", "E_IO");
      }
      writeAll(fd, p, len, job.path);
      written += len;
    };
    put(job.header.data(), job.header.size());
    for (size_t i = 0; i < job.tensors.size(); ++i) {
      at::Tensor t = job.tensors[i].to(at::kCPU).contiguous();
      if ((uint64_t)t.nbytes() != job.nbytes[i])
        throwTorch("a tensor changed size while it was being saved", "E_VALUE");
      if (t.nbytes()) put(static_cast<const uint8_t*>(t.data_ptr()), t.nbytes());
      job.tensors[i] = at::Tensor();  // release a CUDA->CPU copy as soon as it is written
    }
    if (fsync(fd) != 0) ioError("cannot flush", job.path, errno);
    int rc = close(fd);
    fd = -1;
    if (rc != 0) ioError("cannot write", job.path, errno);
  } catch (...) {
    if (fd >= 0) close(fd);
    throw;
  }
}

// write(path, header: Buffer, handles: number[], nbytes: number[], async: boolean, failAfter?)
Napi::Value Write(const Napi::CallbackInfo& info) {
  return guard(info, "save", [&]() -> Napi::Value {
    Napi::Env env = info.Env();
    auto job = std::make_shared<WriteJob>();
    if (!info[0].IsString()) throwType("path must be a string");
    job->path = info[0].As<Napi::String>().Utf8Value();
    if (job->path.empty() || job->path.find('\0') != std::string::npos) throwType("invalid path");
    if (!info[1].IsBuffer()) throwType("header must be a Buffer");
    auto h = info[1].As<Napi::Buffer<uint8_t>>();
    // The header is built in TS; check the framing here anyway so a bug there cannot write a
    // file that no reader accepts.
    if (h.Length() < 8 || h.Length() % 8 != 0 || h.Length() - 8 > kMaxHeader) throwRange("bad header framing", "E_FORMAT");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | h.Data()[i];
    if (n != h.Length() - 8) throwRange("bad header length prefix", "E_FORMAT");
    job->header.assign(h.Data(), h.Data() + h.Length());
    if (!info[2].IsArray() || !info[3].IsArray()) throwType("expected tensor and size arrays");
    auto hs = info[2].As<Napi::Array>();
    auto ns = info[3].As<Napi::Array>();
    if (hs.Length() != ns.Length()) throwType("tensor and size arrays differ in length");
    for (uint32_t i = 0; i < hs.Length(); ++i) {
      at::Tensor t = tensorAt(env, hs.Get(i)).detach();
      if (!supported(t.scalar_type()))
        throwType("cannot save " + describeTensor(t) + ": dtype not supported by safetensors here", "E_DTYPE");
      if (t.layout() != at::kStrided) throwType("cannot save a sparse tensor", "E_VALUE");
      job->tensors.push_back(t);
      job->nbytes.push_back((uint64_t)numberArg(ns.Get(i), "tensor size"));
      if (job->nbytes.back() != (uint64_t)t.numel() * t.element_size())
        throwRange("tensor size does not match the header", "E_VALUE");
    }
    bool async = info[4].IsBoolean() && info[4].As<Napi::Boolean>().Value();
    if (info[5].IsNumber()) job->failAfter = (int64_t)info[5].As<Napi::Number>().DoubleValue();
    if (!async) {
      runWrite(*job);
      return env.Undefined();
    }
    return AsyncTask::start(env, "saveAsync", [job]() { runWrite(*job); },
                            [](Napi::Env env) -> Napi::Value { return env.Undefined(); });
  });
}

}  // namespace

void registerSafetensors(Napi::Env env, Napi::Object exports) {
  exports.Set("stOpen", Napi::Function::New(env, Open, "stOpen"));
  exports.Set("stClose", Napi::Function::New(env, Close, "stClose"));
  exports.Set("stTensor", Napi::Function::New(env, GetTensor, "stTensor"));
  exports.Set("stReadAsync", Napi::Function::New(env, ReadAsync, "stReadAsync"));
  exports.Set("stWrite", Napi::Function::New(env, Write, "stWrite"));
}

}  // namespace tim

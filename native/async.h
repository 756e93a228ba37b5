// Running libtorch work off the JS thread. The caller's thread-local state (grad mode, autocast,
// inference mode...) is captured on the JS thread and reinstalled in the worker, so an async call
// computes exactly what the synchronous call would.
#pragma once
#include "common.h"
#include <ATen/ThreadLocalState.h>
#include <functional>

namespace tim {

class AsyncTask : public Napi::AsyncWorker {
 public:
  using Work = std::function<void()>;
  using Done = std::function<Napi::Value(Napi::Env)>;

  // `what` prefixes the message of an error raised in the worker (op name and argument shapes).
  static Napi::Promise start(Napi::Env env, std::string what, Work work, Done done) {
    auto* task = new AsyncTask(env, what, std::move(work), std::move(done));
    Napi::Promise p = task->deferred_.Promise();
    task->Queue();
    return p;
  }

 protected:
  void Execute() override {
    try {
      at::ThreadLocalStateGuard g(state_);
      work_();
    } catch (...) {
      error_ = std::current_exception();
      SetError("failed");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(done_(env));
    } catch (...) {
      error_ = std::current_exception();
      OnError(Napi::Error::New(env, "failed"));
    }
  }
  void OnError(const Napi::Error&) override {
    Napi::Env env = Env();
    raise(env, translate(error_, what_));
    Napi::Value err = env.GetAndClearPendingException().Value();
    deferred_.Reject(err);
  }

 private:
  AsyncTask(Napi::Env env, std::string what, Work work, Done done)
      : Napi::AsyncWorker(env, "tim-torch"), deferred_(Napi::Promise::Deferred::New(env)), what_(std::move(what)),
        work_(std::move(work)), done_(std::move(done)) {}
  Napi::Promise::Deferred deferred_;
  std::string what_;
  Work work_;
  Done done_;
  // Captured by the constructor, i.e. on the JS thread at call time: grad mode, autocast, ...
  at::ThreadLocalState state_;
  std::exception_ptr error_;
};

}  // namespace tim

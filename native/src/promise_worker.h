// A small bridge from "blocking work on the libuv thread pool" to "a JS Promise".
// Work runs without touching any JS value; Settle runs back on the JS thread and decides
// whether to resolve or reject. Never call N-API from Execute().
#pragma once

#include <napi.h>

#include <functional>
#include <utility>

namespace ferry {

template <typename R>
class PromiseWorker : public Napi::AsyncWorker {
 public:
  using Work = std::function<R()>;
  using Settle = std::function<void(Napi::Env, Napi::Promise::Deferred&, R&)>;

  // Queues the work and returns the promise it will settle.
  static Napi::Promise Start(Napi::Env env, Work work, Settle settle) {
    auto* w = new PromiseWorker(env, std::move(work), std::move(settle));
    Napi::Promise p = w->deferred_.Promise();
    w->Queue();  // the worker deletes itself after OnOK/OnError
    return p;
  }

 protected:
  void Execute() override {
    try {
      result_ = work_();
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { settle_(Env(), deferred_, result_); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  PromiseWorker(Napi::Env env, Work work, Settle settle)
      : Napi::AsyncWorker(env, "ferry_native"),
        deferred_(Napi::Promise::Deferred::New(env)),
        work_(std::move(work)),
        settle_(std::move(settle)) {}

  Napi::Promise::Deferred deferred_;
  Work work_;
  Settle settle_;
  R result_{};
};

}  // namespace ferry

// ferry_native: the JS-facing surface of the addon. Argument checking and JS conversion live
// here; nft.cc and conntrack.cc never see a JS value. Blocking calls return Promises and run on
// the libuv thread pool; nftRunSync exists for tests and one-shot tools.
#include <napi.h>

#include <arpa/inet.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bpf.h"
#include "conntrack.h"
#include "js_args.h"
#include "nfnl.h"
#include "nfnl_monitor.h"
#include "nft.h"
#include "promise_worker.h"
#include "route_watch.h"
#include "splice.h"

namespace ferry {
namespace {

bool OptBool(const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return false;
  if (!v.IsBoolean()) throw Napi::TypeError::New(o.Env(), std::string("nft option ") + key + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

void ParseNftArgs(const Napi::CallbackInfo& info, std::string* text, NftOptions* opts) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "nftRun: the first argument must be a string of nft commands");
  *text = WithoutNul(env, info[0].As<Napi::String>().Utf8Value(), "nftRun: the script");
  if (info.Length() >= 2 && !info[1].IsUndefined() && !info[1].IsNull()) {
    if (!info[1].IsObject()) throw Napi::TypeError::New(env, "nftRun: options must be an object");
    Napi::Object o = info[1].As<Napi::Object>();
    opts->json = OptBool(o, "json");
    opts->handles = OptBool(o, "handles");
    opts->terse = OptBool(o, "terse");
    opts->dryRun = OptBool(o, "dryRun");
  }
}

Napi::Object NftResultToJs(Napi::Env env, const NftResult& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", Napi::Boolean::New(env, r.ok));
  o.Set("output", Napi::String::New(env, r.output));
  o.Set("error", Napi::String::New(env, r.error));
  return o;
}

Napi::Value NftRunSync(const Napi::CallbackInfo& info) {
  std::string text;
  NftOptions opts;
  ParseNftArgs(info, &text, &opts);
  return NftResultToJs(info.Env(), NftRun(text, opts));
}

Napi::Value NftRunAsync(const Napi::CallbackInfo& info) {
  std::string text;
  NftOptions opts;
  ParseNftArgs(info, &text, &opts);
  return PromiseWorker<NftResult>::Start(
      info.Env(), [text, opts]() { return NftRun(text, opts); },
      [](Napi::Env env, Napi::Promise::Deferred& d, NftResult& r) { d.Resolve(NftResultToJs(env, r)); });
}

void ParseAddr(Napi::Env env, const Napi::Object& o, const char* key, uint8_t family, CtAddr* out) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return;
  if (!v.IsString()) throw Napi::TypeError::New(env, std::string("conntrack filter: ") + key + " must be a string");
  std::string s = v.As<Napi::String>().Utf8Value();
  if (inet_pton(family, s.c_str(), out->bytes) != 1) {
    throw Napi::TypeError::New(env, std::string("conntrack filter: ") + key + " is not an IPv" +
                                        (family == AF_INET ? "4" : "6") + " address: " + s);
  }
  out->set = true;
}

int ParsePort(Napi::Env env, const Napi::Object& o, const char* key) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined() || v.IsNull()) return -1;
  double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!v.IsNumber() || !(d >= 0 && d <= 65535) || d != static_cast<int>(d)) {
    throw Napi::TypeError::New(env, std::string("conntrack filter: ") + key + " must be an integer port 0-65535");
  }
  return static_cast<int>(d);
}

CtFilter ParseFilterObject(Napi::Env env, const Napi::Value& v) {
  if (!v.IsObject() || v.IsArray()) throw Napi::TypeError::New(env, "conntrack: a filter must be an object");
  Napi::Object o = v.As<Napi::Object>();
  CtFilter f;
  Napi::Value fam = o.Get("family");
  int family = fam.IsNumber() ? fam.As<Napi::Number>().Int32Value() : 0;
  if (family == 4) f.family = AF_INET;
  else if (family == 6) f.family = AF_INET6;
  else throw Napi::TypeError::New(env, "conntrack filter: family must be 4 or 6");
  Napi::Value proto = o.Get("protocol");
  std::string p = proto.IsString() ? proto.As<Napi::String>().Utf8Value() : "";
  if (p == "tcp") f.protocol = IPPROTO_TCP;
  else if (p == "udp") f.protocol = IPPROTO_UDP;
  else if (p == "sctp") f.protocol = IPPROTO_SCTP;
  else throw Napi::TypeError::New(env, "conntrack filter: protocol must be 'tcp', 'udp' or 'sctp'");
  ParseAddr(env, o, "origDst", f.family, &f.origDst);
  f.origDstPort = ParsePort(env, o, "origDstPort");
  ParseAddr(env, o, "replySrc", f.family, &f.replySrc);
  f.replySrcPort = ParsePort(env, o, "replySrcPort");
  return f;
}

CtFilter ParseFilter(const Napi::CallbackInfo& info) {
  if (info.Length() < 1) throw Napi::TypeError::New(info.Env(), "conntrack: the argument must be a filter object");
  return ParseFilterObject(info.Env(), info[0]);
}

// A filter or an array of them; an invalid element is refused by its index, before any is used.
std::vector<CtFilter> ParseFilters(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) return {ParseFilter(info)};
  Napi::Array a = info[0].As<Napi::Array>();
  std::vector<CtFilter> out;
  out.reserve(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) {
    try {
      out.push_back(ParseFilterObject(env, a.Get(i)));
    } catch (const Napi::Error& e) {
      throw Napi::TypeError::New(env, "conntrack: filter " + std::to_string(i) + ": " + e.Message());
    }
  }
  return out;
}

const char* ProtoName(uint8_t p) {
  switch (p) {
    case IPPROTO_TCP: return "tcp";
    case IPPROTO_UDP: return "udp";
    case IPPROTO_SCTP: return "sctp";
    default: return "other";
  }
}

// Rejects with an Error carrying errno and the failing step, or returns false when all went well.
bool RejectOnError(Napi::Env env, Napi::Promise::Deferred& d, const CtResult& r) {
  if (r.err == 0) return false;
  Napi::Error e = Napi::Error::New(env, r.errContext + ": " + std::strerror(r.err));
  e.Set("code", Napi::String::New(env, "FERRY_ERR_CONNTRACK"));
  e.Set("errno", Napi::Number::New(env, r.err));
  e.Set("syscall", Napi::String::New(env, r.errContext));
  d.Reject(e.Value());
  return true;
}

Napi::Value ConntrackDeleteAsync(const Napi::CallbackInfo& info) {
  std::vector<CtFilter> filters = ParseFilters(info);
  return PromiseWorker<CtResult>::Start(
      info.Env(), [filters]() { return ConntrackDelete(filters); },
      [](Napi::Env env, Napi::Promise::Deferred& d, CtResult& r) {
        if (!RejectOnError(env, d, r)) d.Resolve(Napi::Number::New(env, r.deleted));
      });
}

Napi::Value ConntrackListAsync(const Napi::CallbackInfo& info) {
  CtFilter f = ParseFilter(info);
  return PromiseWorker<CtResult>::Start(
      info.Env(), [f]() { return ConntrackList(f); },
      [](Napi::Env env, Napi::Promise::Deferred& d, CtResult& r) {
        if (RejectOnError(env, d, r)) return;
        Napi::Array arr = Napi::Array::New(env, r.entries.size());
        for (size_t i = 0; i < r.entries.size(); i++) {
          const CtEntry& c = r.entries[i];
          Napi::Object o = Napi::Object::New(env);
          o.Set("family", Napi::Number::New(env, c.family == AF_INET ? 4 : 6));
          o.Set("protocol", Napi::String::New(env, ProtoName(c.protocol)));
          o.Set("origSrc", Napi::String::New(env, c.origSrc));
          o.Set("origSrcPort", Napi::Number::New(env, c.origSrcPort));
          o.Set("origDst", Napi::String::New(env, c.origDst));
          o.Set("origDstPort", Napi::Number::New(env, c.origDstPort));
          o.Set("replySrc", Napi::String::New(env, c.replySrc));
          o.Set("replySrcPort", Napi::Number::New(env, c.replySrcPort));
          o.Set("replyDst", Napi::String::New(env, c.replyDst));
          o.Set("replyDstPort", Napi::Number::New(env, c.replyDstPort));
          arr.Set(i, o);
        }
        d.Resolve(arr);
      });
}

}  // namespace
}  // namespace ferry

namespace ferry {
namespace {

// (bytes, netns?) -> copies the bytes: the work runs after this call returns and JS may reuse
// the buffer; a copy is a few milliseconds even for a full sync's batch.
void ParseNfnlArgs(const Napi::CallbackInfo& info, const char* fn, std::vector<uint8_t>* bytes, std::string* netns) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray()) throw Napi::TypeError::New(env, std::string(fn) + ": the first argument must be a Uint8Array");
  Napi::Uint8Array a = info[0].As<Napi::Uint8Array>();
  bytes->assign(a.Data(), a.Data() + a.ByteLength());
  if (info.Length() >= 2 && !info[1].IsUndefined() && !info[1].IsNull()) {
    if (!info[1].IsString()) throw Napi::TypeError::New(env, std::string(fn) + ": netns must be a path string");
    *netns = WithoutNul(env, info[1].As<Napi::String>().Utf8Value(), std::string(fn) + ": netns");
  }
}

// A batch is sent from the caller's own bytes, not a copy (a full sync's is tens of MB): the
// reference keeps them alive until the promise settles; the encoder never reuses a batch buffer.
// The reference is released on the JS thread (the worker and its lambdas die there).
struct HeldBytes {
  Napi::Reference<Napi::Uint8Array> ref;
  const uint8_t* data;
  size_t len;
};

Napi::Object BatchResultObject(Napi::Env env, const NfnlBatchResult& r) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("ok", Napi::Boolean::New(env, r.ok));
  o.Set("sysError", Napi::String::New(env, r.sysError));
  Napi::Array errs = Napi::Array::New(env, r.errors.size());
  for (size_t i = 0; i < r.errors.size(); i++) {
    Napi::Object e = Napi::Object::New(env);
    e.Set("seq", Napi::Number::New(env, r.errors[i].seq));
    e.Set("errno", Napi::Number::New(env, r.errors[i].err));
    e.Set("offset", Napi::Number::New(env, r.errors[i].offset));
    e.Set("message", Napi::String::New(env, r.errors[i].msg));
    errs.Set(i, e);
  }
  o.Set("errors", errs);
  return o;
}

// A batch call's arguments: the batch (a Uint8Array) and an optional netns path.
Napi::Uint8Array BatchArgs(const Napi::CallbackInfo& info, const char* fn, std::string* netns) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(env, std::string(fn) + ": the first argument must be a Uint8Array");
  }
  if (info.Length() >= 2 && !info[1].IsUndefined() && !info[1].IsNull()) {
    if (!info[1].IsString()) throw Napi::TypeError::New(env, std::string(fn) + ": netns must be a path string");
    *netns = WithoutNul(env, info[1].As<Napi::String>().Utf8Value(), std::string(fn) + ": netns");
  }
  return info[0].As<Napi::Uint8Array>();
}

// The same batch on the calling (JS) thread: for a change of a few messages the kernel's part is
// a fraction of a millisecond, less than the hop to a pool thread and back.
Napi::Value NfnlBatchSync(const Napi::CallbackInfo& info) {
  std::string netns;
  Napi::Uint8Array a = BatchArgs(info, "nfnlBatchSync", &netns);
  // Entering a namespace here would move the JS thread, and every socket Node opens after it.
  if (!netns.empty()) throw Napi::TypeError::New(info.Env(), "nfnlBatchSync: no netns on the JS thread (use nfnlBatch)");
  NfnlBatchResult r;
  try {
    r = NfnlBatch(a.Data(), a.ByteLength(), netns);
  } catch (const std::exception& e) {
    throw Napi::Error::New(info.Env(), e.what());
  }
  return BatchResultObject(info.Env(), r);
}

Napi::Value NfnlBatchAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string netns;
  Napi::Uint8Array a = BatchArgs(info, "nfnlBatch", &netns);
  auto held = std::make_shared<HeldBytes>(HeldBytes{Napi::Persistent(a), a.Data(), a.ByteLength()});
  return PromiseWorker<NfnlBatchResult>::Start(
      env, [held, netns]() { return NfnlBatch(held->data, held->len, netns); },
      [](Napi::Env env, Napi::Promise::Deferred& d, NfnlBatchResult& r) { d.Resolve(BatchResultObject(env, r)); });
}

Napi::Value NfnlDumpAsync(const Napi::CallbackInfo& info) {
  auto bytes = std::make_shared<std::vector<uint8_t>>();
  std::string netns;
  ParseNfnlArgs(info, "nfnlDump", bytes.get(), &netns);
  return PromiseWorker<NfnlDumpResult>::Start(
      info.Env(), [bytes, netns]() { return NfnlDump(bytes->data(), bytes->size(), netns); },
      [](Napi::Env env, Napi::Promise::Deferred& d, NfnlDumpResult& r) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("ok", Napi::Boolean::New(env, r.ok));
        o.Set("errno", Napi::Number::New(env, r.err));
        o.Set("sysError", Napi::String::New(env, r.sysError));
        o.Set("data", Napi::Buffer<uint8_t>::Copy(env, r.data.data(), r.data.size()));
        d.Resolve(o);
      });
}

}  // namespace
}  // namespace ferry


// ---- nfnlMonitor: the tamper watch's subscription (nfnl_monitor.cc) ------------------------

namespace ferry {
namespace {

struct MonitorBinding;
void MonitorEventToJs(Napi::Env env, Napi::Function cb, MonitorBinding*, MonitorEvent* raw);
using MonitorTsfn = Napi::TypedThreadSafeFunction<MonitorBinding, MonitorEvent, MonitorEventToJs>;

// One per nfnlMonitor() call. Stopped by its handle's stop() or, at the latest, when the JS
// environment goes away (the cleanup hook), so neither a forgotten handle nor process exit can
// leave the thread calling into a dead environment.
struct MonitorBinding {
  napi_env env = nullptr;
  std::unique_ptr<NfnlMonitor> monitor;
  MonitorTsfn tsfn;
  bool stopped = false;
};

void MonitorCleanupHook(void* arg);

// What a handle's stop() holds: the binding until the handle is collected.
struct MonitorRef {
  MonitorBinding* b = nullptr;
};

void StopBinding(MonitorBinding* b, bool fromHook) {
  if (b->stopped) return;
  b->stopped = true;
  b->monitor->Stop();  // joins the thread: nothing calls the TSFN after this
  // Abort, not Release: an event the thread queued before the join is dropped (freed with a null
  // env), so nothing reaches JS after stop() returns.
  b->tsfn.Abort();
  if (!fromHook) napi_remove_env_cleanup_hook(b->env, MonitorCleanupHook, b);
}

void MonitorCleanupHook(void* arg) { StopBinding(static_cast<MonitorBinding*>(arg), true); }

const char* MsgTypeName(uint8_t t) {
  switch (t) {
    case 0: return "newtable";
    case 2: return "deltable";
    case 3: return "newchain";
    case 5: return "delchain";
    case 6: return "newrule";
    case 8: return "delrule";
    case 9: return "newset";
    case 11: return "delset";
    case 12: return "newsetelem";
    case 14: return "delsetelem";
    case 18: return "newobj";
    case 20: return "delobj";
    case 22: return "newflowtable";
    case 24: return "delflowtable";
    default: return "other";
  }
}

const char* FamilyName(uint8_t f) {
  switch (f) {
    case 1: return "inet";
    case 2: return "ip";
    case 3: return "arp";
    case 5: return "netdev";
    case 7: return "bridge";
    case 10: return "ip6";
    default: return "unspec";
  }
}

void MonitorEventToJs(Napi::Env env, Napi::Function cb, MonitorBinding*, MonitorEvent* raw) {
  std::unique_ptr<MonitorEvent> ev(raw);
  if (env == nullptr) return;  // teardown
  Napi::Object o = Napi::Object::New(env);
  switch (ev->kind) {
    case MonitorEvent::kGeneration: {
      o.Set("kind", Napi::String::New(env, "generation"));
      o.Set("genId", Napi::Number::New(env, ev->genId));
      o.Set("procPid", Napi::Number::New(env, ev->procPid));
      o.Set("procName", Napi::String::New(env, ev->procName));
      o.Set("portid", Napi::Number::New(env, ev->portid));
      o.Set("own", Napi::Boolean::New(env, ev->own));
      Napi::Array changes = Napi::Array::New(env, ev->changes.size());
      for (size_t i = 0; i < ev->changes.size(); i++) {
        const MonitorChange& c = ev->changes[i];
        Napi::Object co = Napi::Object::New(env);
        co.Set("op", Napi::String::New(env, MsgTypeName(c.msgType)));
        co.Set("family", Napi::String::New(env, FamilyName(c.family)));
        co.Set("table", Napi::String::New(env, c.table));
        co.Set("name", Napi::String::New(env, c.name));
        co.Set("count", Napi::Number::New(env, c.count));
        changes.Set(i, co);
      }
      o.Set("changes", changes);
      o.Set("more", Napi::Number::New(env, ev->more));
      break;
    }
    case MonitorEvent::kOverrun:
      o.Set("kind", Napi::String::New(env, "overrun"));
      o.Set("ownRecent", Napi::Boolean::New(env, ev->ownRecent));
      break;
    case MonitorEvent::kError:
      o.Set("kind", Napi::String::New(env, "error"));
      o.Set("error", Napi::String::New(env, ev->error));
      break;
  }
  // An exception thrown by the listener is reported by Node as uncaught, like any callback's.
  cb.Call({o});
}

// nfnlMonitor({tables: string[], netns?: string, rcvbuf?: number}, onEvent) -> {stop()}
Napi::Value NfnlMonitorStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsObject() || !info[1].IsFunction()) {
    throw Napi::TypeError::New(env, "nfnlMonitor: arguments must be (options, onEvent)");
  }
  Napi::Object o = info[0].As<Napi::Object>();
  Napi::Value tv = o.Get("tables");
  if (!tv.IsArray()) throw Napi::TypeError::New(env, "nfnlMonitor: options.tables must be an array of table names");
  Napi::Array ta = tv.As<Napi::Array>();
  std::vector<std::string> tables;
  for (uint32_t i = 0; i < ta.Length(); i++) {
    Napi::Value v = ta.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, "nfnlMonitor: options.tables must be an array of table names");
    tables.push_back(WithoutNul(env, v.As<Napi::String>().Utf8Value(), "nfnlMonitor: a table name"));
  }
  std::string netns;
  Napi::Value nv = o.Get("netns");
  if (!nv.IsUndefined() && !nv.IsNull()) {
    if (!nv.IsString()) throw Napi::TypeError::New(env, "nfnlMonitor: options.netns must be a path string");
    netns = WithoutNul(env, nv.As<Napi::String>().Utf8Value(), "nfnlMonitor: options.netns");
  }
  int rcvbuf = 32 << 20;
  Napi::Value rv = o.Get("rcvbuf");
  if (!rv.IsUndefined() && !rv.IsNull()) {
    double d = rv.IsNumber() ? rv.As<Napi::Number>().DoubleValue() : -1;
    // NaN fails this test, so it never reaches the cast below (undefined for NaN).
    if (!(d >= 4096 && d <= (1 << 30))) throw Napi::TypeError::New(env, "nfnlMonitor: options.rcvbuf must be a byte count between 4096 and 1 GiB");
    rcvbuf = static_cast<int>(d);
  }

  auto* b = new MonitorBinding;
  b->env = env;
  b->tsfn = MonitorTsfn::New(env, info[1].As<Napi::Function>(), "ferry_nfnl_monitor", 0, 1, b);
  // The watch never keeps a process alive by itself: the daemon's servers and timers do.
  b->tsfn.Unref(env);
  try {
    b->monitor = std::make_unique<NfnlMonitor>(netns, std::move(tables), rcvbuf, [b](MonitorEvent&& ev) {
      auto* m = new MonitorEvent(std::move(ev));
      if (b->tsfn.NonBlockingCall(m) != napi_ok) delete m;  // the environment is going away
    });
  } catch (const std::exception& e) {
    b->tsfn.Release();
    Napi::Error err = Napi::Error::New(env, std::string("nfnlMonitor: ") + e.what());
    err.Set("code", Napi::String::New(env, "FERRY_ERR_NFNL_MONITOR"));
    delete b;
    throw err;
  }
  napi_add_env_cleanup_hook(env, MonitorCleanupHook, b);
  // stop() may outlive the handle (kept on its own, the handle collected): it reaches the binding
  // only through this reference, which the handle's finalizer clears before freeing it.
  auto ref = std::make_shared<MonitorRef>();
  ref->b = b;
  Napi::Object handle = Napi::Object::New(env);
  handle.Set("stop", Napi::Function::New(
                         env,
                         [ref](const Napi::CallbackInfo&) {
                           if (ref->b != nullptr) StopBinding(ref->b, false);
                         },
                         "stop"));
  // Freed with the handle; a handle collected while still running is stopped first.
  handle.Set("binding", Napi::External<MonitorBinding>::New(
                            env, b,
                            [](Napi::Env, MonitorBinding* p, std::shared_ptr<MonitorRef>* r) {
                              (*r)->b = nullptr;
                              delete r;
                              StopBinding(p, p->stopped);
                              delete p;
                            },
                            new std::shared_ptr<MonitorRef>(ref)));
  return handle;
}

// glibc's malloc raises its mmap threshold to the size of each large block freed (up to 32 MiB)
// and its trim threshold to twice that: after the first full sync frees its batch buffer, later
// buffers of that size come from the heap and their pages stay resident and fragmented after
// they are freed. Measured in the daemon (docs/memory.md): native memory grew 8 MiB a full
// resync at 10k Services; with fixed thresholds it stays flat. Setting either threshold
// explicitly turns the adjustment off (mallopt(3)).
Napi::Value MallocFixThresholds(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsNumber() || !info[1].IsNumber()) {
    throw Napi::TypeError::New(env, "mallocFixThresholds: (mmapBytes, trimBytes) numbers");
  }
  const int64_t mmapBytes = info[0].As<Napi::Number>().Int64Value();
  const int64_t trimBytes = info[1].As<Napi::Number>().Int64Value();
  if (mmapBytes < 4096 || mmapBytes > (32 << 20) || trimBytes < 0 || trimBytes > (1LL << 30)) {
    throw Napi::RangeError::New(env, "mallocFixThresholds: mmapBytes in [4 KiB, 32 MiB], trimBytes in [0, 1 GiB]");
  }
#ifdef __GLIBC__
  const bool ok = mallopt(M_MMAP_THRESHOLD, static_cast<int>(mmapBytes)) == 1 && mallopt(M_TRIM_THRESHOLD, static_cast<int>(trimBytes)) == 1;
  return Napi::Boolean::New(env, ok);
#else
  return Napi::Boolean::New(env, false);
#endif
}

}  // namespace
}  // namespace ferry

static Napi::Object InitFerryNative(Napi::Env env, Napi::Object exports) {
  using namespace ferry;
  exports.Set("nftRun", Napi::Function::New(env, NftRunAsync, "nftRun"));
  exports.Set("nftRunSync", Napi::Function::New(env, NftRunSync, "nftRunSync"));
  exports.Set("nfnlBatch", Napi::Function::New(env, NfnlBatchAsync, "nfnlBatch"));
  exports.Set("nfnlBatchSync", Napi::Function::New(env, NfnlBatchSync, "nfnlBatchSync"));
  exports.Set("nfnlDump", Napi::Function::New(env, NfnlDumpAsync, "nfnlDump"));
  exports.Set("nfnlMonitor", Napi::Function::New(env, NfnlMonitorStart, "nfnlMonitor"));
  exports.Set("conntrackDelete", Napi::Function::New(env, ConntrackDeleteAsync, "conntrackDelete"));
  exports.Set("conntrackList", Napi::Function::New(env, ConntrackListAsync, "conntrackList"));
  RegisterSplice(env, exports);
  RegisterBpf(env, exports);
  RegisterRouteWatch(env, exports);
  exports.Set("mallocFixThresholds", Napi::Function::New(env, MallocFixThresholds, "mallocFixThresholds"));
  exports.Set("abiVersion", Napi::Number::New(env, 2));
  return exports;
}

NODE_API_MODULE(ferry_native, InitFerryNative)

// splice(2) forwarding between two TCP sockets; see splice.h for the contract.
//
// Per direction the bytes go src socket → pipe → dst socket. The fds are non-blocking (libuv made
// them so; the file status flags are shared by our dups), the pipes too, so a splice call either
// moves bytes, reports EOF (0) or says EAGAIN. Every socket is registered edge-triggered for
// both readability and writability; on any event the connection is pumped until neither
// direction can move, which is exactly when a new edge is due (see Step). A connection that
// keeps moving is put back on a ready list after a bounded amount of work, so one bulk transfer
// cannot starve the others.
#include "splice.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <system_error>
#include <utility>

namespace ferry {

namespace {

// Bigger pipes move more per syscall; the kernel caps this at /proc/sys/fs/pipe-max-size and may
// refuse it (per-user pipe quotas), in which case the default (64 KiB) is used.
constexpr int kPipeBytes = 256 * 1024;
// Rounds of work per connection before others get their turn.
constexpr int kRoundsPerTurn = 16;
constexpr int kMaxEvents = 128;

void CloseFd(int* fd) {
  if (*fd >= 0) {
    close(*fd);
    *fd = -1;
  }
}

std::string ErrnoName(int e) {
  const char* n = strerrorname_np(e);
  return n ? n : "E" + std::to_string(e);
}

}  // namespace

struct SpliceDir {
  int src = -1;  // borrowed from the Conn: its a or b
  int dst = -1;
  int pipeR = -1;
  int pipeW = -1;
  size_t cap = 0;     // pipe capacity in bytes
  size_t inPipe = 0;  // bytes read from src, not yet written to dst
  uint64_t moved = 0;
  bool srcEof = false;
  bool done = false;
  const char* srcName = "";
  const char* dstName = "";
};

struct SplicePoller::Conn {
  struct Side {
    Conn* conn;
    int fd;
    const char* name;
  };
  uint64_t id = 0;
  int a = -1;  // our dups of the caller's fds
  int b = -1;
  SpliceDir ab;
  SpliceDir ba;
  Side sideA{this, -1, "a"};
  Side sideB{this, -1, "b"};
  bool queued = false;
  bool registered = false;
  bool aborted = false;
  int err = 0;
  std::string where;

  void Fail(int e, std::string w) {
    if (err != 0) return;  // the first error is the cause; later ones are its echoes
    err = e;
    where = std::move(w);
  }
};

namespace {

void OpenPipe(SpliceDir* d) {
  int p[2];
  if (pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
  d->pipeR = p[0];
  d->pipeW = p[1];
  fcntl(d->pipeW, F_SETPIPE_SZ, kPipeBytes);  // best effort
  int sz = fcntl(d->pipeW, F_GETPIPE_SZ);
  d->cap = sz > 0 ? static_cast<size_t>(sz) : 65536;
}

// Moves what it can in one direction: one read into the pipe, one write out of it. Returns
// whether anything changed. When it returns false the direction is done, or waits for an edge:
// - pipe empty and the read said EAGAIN → the src socket is drained: EPOLLIN will follow;
// - pipe not empty and the write said EAGAIN → the dst socket is full: EPOLLOUT will follow.
// (A read can also say EAGAIN because the pipe has no free slot although bytes < cap; then the
// pipe is not empty and the write decides.)
bool Step(SplicePoller::Conn* c, SpliceDir* d) {
  if (d->done) return false;
  bool progress = false;
  if (!d->srcEof && d->inPipe < d->cap) {
    ssize_t n = splice(d->src, nullptr, d->pipeW, nullptr, d->cap - d->inPipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      d->inPipe += static_cast<size_t>(n);
      progress = true;
    } else if (n == 0) {
      d->srcEof = true;
      progress = true;
    } else if (errno == EINTR) {
      progress = true;
    } else if (errno != EAGAIN) {
      c->Fail(errno, std::string("splice from ") + d->srcName);
      return false;
    }
  }
  if (d->inPipe > 0) {
    ssize_t n = splice(d->pipeR, nullptr, d->dst, nullptr, d->inPipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      d->inPipe -= static_cast<size_t>(n);
      d->moved += static_cast<uint64_t>(n);
      progress = true;
    } else if (n < 0 && errno == EINTR) {
      progress = true;
    } else if (n < 0 && errno != EAGAIN) {
      c->Fail(errno, std::string("splice to ") + d->dstName);
      return false;
    }
  }
  if (d->srcEof && d->inPipe == 0) {
    // Half-close: pass the FIN on and keep the other direction going. ENOTCONN: dst is already
    // fully closed, there is nothing left to shut.
    if (shutdown(d->dst, SHUT_WR) != 0 && errno != ENOTCONN) {
      c->Fail(errno, std::string("shutdown ") + d->dstName);
    }
    d->done = true;
    progress = true;
  }
  return progress;
}

}  // namespace

SplicePoller::SplicePoller(Done done) : done_(std::move(done)) {
  epfd_ = epoll_create1(EPOLL_CLOEXEC);
  if (epfd_ < 0) throw std::system_error(errno, std::generic_category(), "epoll_create1");
  wakefd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wakefd_ < 0) {
    int e = errno;
    CloseFd(&epfd_);
    throw std::system_error(e, std::generic_category(), "eventfd");
  }
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;  // the wake-up fd; connections carry their Side
  if (epoll_ctl(epfd_, EPOLL_CTL_ADD, wakefd_, &ev) != 0) {
    int e = errno;
    CloseFd(&wakefd_);
    CloseFd(&epfd_);
    throw std::system_error(e, std::generic_category(), "epoll_ctl");
  }
  // The thread must not take the process's signals (SIGINT, SIGTERM belong to Node's loop).
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  thread_ = std::thread([this] { Run(); });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
}

SplicePoller::~SplicePoller() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stop_ = true;
  }
  uint64_t one = 1;
  (void)!write(wakefd_, &one, sizeof one);
  if (thread_.joinable()) thread_.join();
  for (auto& kv : conns_) Release(kv.second);
  for (Conn* c : adds_) Release(c);
  CloseFd(&wakefd_);
  CloseFd(&epfd_);
}

void SplicePoller::Release(Conn* c) {
  CloseFd(&c->ab.pipeR);
  CloseFd(&c->ab.pipeW);
  CloseFd(&c->ba.pipeR);
  CloseFd(&c->ba.pipeW);
  CloseFd(&c->a);
  CloseFd(&c->b);
  delete c;
}

uint64_t SplicePoller::Add(int fdA, int fdB) {
  for (int fd : {fdA, fdB}) {
    struct stat st;
    if (fstat(fd, &st) != 0) throw std::system_error(errno, std::generic_category(), "fstat fd " + std::to_string(fd));
    if (!S_ISSOCK(st.st_mode)) throw std::invalid_argument("fd " + std::to_string(fd) + " is not a socket");
    int fl = fcntl(fd, F_GETFL);
    // A blocking socket would stall every connection on the poller thread.
    if (fl < 0 || !(fl & O_NONBLOCK)) throw std::invalid_argument("fd " + std::to_string(fd) + " is not non-blocking");
  }
  std::unique_ptr<Conn> c(new Conn);
  auto fail = [&](const char* what) {
    int e = errno;
    Conn* raw = c.release();
    Release(raw);
    throw std::system_error(e, std::generic_category(), what);
  };
  c->a = fcntl(fdA, F_DUPFD_CLOEXEC, 0);
  if (c->a < 0) fail("dup");
  c->b = fcntl(fdB, F_DUPFD_CLOEXEC, 0);
  if (c->b < 0) fail("dup");
  try {
    OpenPipe(&c->ab);
    OpenPipe(&c->ba);
  } catch (const std::system_error&) {
    Release(c.release());
    throw;
  }
  c->ab.src = c->a;
  c->ab.dst = c->b;
  c->ab.srcName = "a";
  c->ab.dstName = "b";
  c->ba.src = c->b;
  c->ba.dst = c->a;
  c->ba.srcName = "b";
  c->ba.dstName = "a";
  c->sideA.fd = c->a;
  c->sideB.fd = c->b;
  uint64_t id;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stop_) {
      Release(c.release());
      throw std::runtime_error("splice poller is stopping");
    }
    id = nextId_++;
    c->id = id;
    live_.insert(id);
    adds_.push_back(c.release());
  }
  uint64_t one = 1;
  (void)!write(wakefd_, &one, sizeof one);
  return id;
}

bool SplicePoller::Abort(uint64_t id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (live_.count(id) == 0) return false;
    aborts_.push_back(id);
  }
  uint64_t one = 1;
  (void)!write(wakefd_, &one, sizeof one);
  return true;
}

void SplicePoller::Enqueue(Conn* c) {
  if (c->queued) return;
  c->queued = true;
  ready_.push_back(c);
}

void SplicePoller::TakeCommands(bool* stop) {
  uint64_t n;
  while (read(wakefd_, &n, sizeof n) > 0) {
  }
  std::vector<Conn*> adds;
  std::vector<uint64_t> aborts;
  {
    std::lock_guard<std::mutex> l(mu_);
    *stop = stop_;
    adds.swap(adds_);
    aborts.swap(aborts_);
  }
  for (Conn* c : adds) {
    conns_[c->id] = c;
    for (Conn::Side* s : {&c->sideA, &c->sideB}) {
      epoll_event ev{};
      ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
      ev.data.ptr = s;
      if (epoll_ctl(epfd_, EPOLL_CTL_ADD, s->fd, &ev) != 0) {
        c->Fail(errno, "epoll_ctl");
        break;
      }
      c->registered = true;
    }
    // Bytes may be waiting already (the client spoke first): pump at once rather than wait for
    // an edge that already happened.
    Enqueue(c);
  }
  for (uint64_t id : aborts) {
    auto it = conns_.find(id);
    if (it == conns_.end()) continue;
    it->second->aborted = true;
    Enqueue(it->second);
  }
}

SplicePoller::PumpResult SplicePoller::Pump(Conn* c) {
  if (c->aborted || c->err != 0) return PumpResult::Done;
  for (int round = 0; round < kRoundsPerTurn; round++) {
    bool p1 = Step(c, &c->ab);
    bool p2 = c->err == 0 && Step(c, &c->ba);
    if (c->err != 0) return PumpResult::Done;
    if (c->ab.done && c->ba.done) return PumpResult::Done;
    if (!p1 && !p2) return PumpResult::Idle;
  }
  return PumpResult::More;
}

void SplicePoller::Finish(Conn* c) {
  if (c->registered) {
    // Explicit: the registration belongs to the open file, which Node still holds open.
    epoll_ctl(epfd_, EPOLL_CTL_DEL, c->a, nullptr);
    epoll_ctl(epfd_, EPOLL_CTL_DEL, c->b, nullptr);
  }
  conns_.erase(c->id);
  {
    std::lock_guard<std::mutex> l(mu_);
    live_.erase(c->id);
  }
  SpliceOutcome o;
  o.aToB = c->ab.moved;
  o.bToA = c->ba.moved;
  o.err = c->err;
  o.where = c->where;
  o.aborted = c->aborted && c->err == 0;
  uint64_t id = c->id;
  Release(c);  // closes our dups before JS hears of it, so JS's close is the last one
  done_(id, std::move(o));
}

void SplicePoller::Run() {
  epoll_event evs[kMaxEvents];
  std::vector<Conn*> turn;
  for (;;) {
    int n = epoll_wait(epfd_, evs, kMaxEvents, ready_.empty() ? -1 : 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // Cannot happen with a valid epoll fd; end every connection rather than spin.
      int e = errno;
      for (auto& kv : conns_) kv.second->Fail(e, "epoll_wait");
      std::vector<Conn*> all;
      for (auto& kv : conns_) all.push_back(kv.second);
      for (Conn* c : all) Finish(c);
      ready_.clear();
      return;
    }
    for (int i = 0; i < n; i++) {
      auto* s = static_cast<Conn::Side*>(evs[i].data.ptr);
      if (s == nullptr) {
        bool stop = false;
        TakeCommands(&stop);
        if (stop) return;
        continue;
      }
      if (evs[i].events & EPOLLERR) {
        // A reset with nothing to read or write would otherwise go unnoticed until the next byte.
        int e = 0;
        socklen_t len = sizeof e;
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 && e != 0) {
          s->conn->Fail(e, std::string("socket ") + s->name);
        }
      }
      Enqueue(s->conn);
    }
    // Each connection queued before this point gets one turn; Finish only ever runs here, on a
    // connection no longer on the ready list and with no event left in this batch.
    turn.clear();
    turn.swap(ready_);
    for (Conn* c : turn) {
      c->queued = false;
      switch (Pump(c)) {
        case PumpResult::Idle:
          break;
        case PumpResult::More:
          Enqueue(c);
          break;
        case PumpResult::Done:
          Finish(c);
          break;
      }
    }
  }
}

// ---- JS surface ---------------------------------------------------------------------------

namespace {

struct DoneMsg {
  uint64_t id;
  SpliceOutcome outcome;
};

struct SpliceBinding;
void OnDoneJs(Napi::Env env, Napi::Function, SpliceBinding* b, DoneMsg* m);
using DoneTsfn = Napi::TypedThreadSafeFunction<SpliceBinding, DoneMsg, OnDoneJs>;

// One per JS environment (the main thread, each worker_thread that loads the addon).
struct SpliceBinding {
  DoneTsfn tsfn;
  std::unique_ptr<SplicePoller> poller;
  std::unordered_map<uint64_t, Napi::Promise::Deferred> pending;  // JS thread only
  size_t active = 0;
};

std::mutex bindingsMu;
std::unordered_map<napi_env, SpliceBinding*> bindings;

void DestroyBinding(void* arg) {
  auto* b = static_cast<SpliceBinding*>(arg);
  b->poller.reset();  // joins the thread: nothing calls the TSFN after this
  {
    std::lock_guard<std::mutex> l(bindingsMu);
    for (auto it = bindings.begin(); it != bindings.end(); ++it) {
      if (it->second == b) {
        bindings.erase(it);
        break;
      }
    }
  }
  // The TSFN is finalized by Node after this hook (hooks run in reverse order of registration).
  delete b;
}

SpliceBinding* GetBinding(Napi::Env env) {
  {
    std::lock_guard<std::mutex> l(bindingsMu);
    auto it = bindings.find(env);
    if (it != bindings.end()) return it->second;
  }
  auto* b = new SpliceBinding;
  b->tsfn = DoneTsfn::New(env, "ferry_splice", 0, 1, b);
  b->tsfn.Unref(env);  // referenced only while connections are forwarding
  try {
    b->poller = std::make_unique<SplicePoller>([b](uint64_t id, SpliceOutcome&& o) {
      auto* m = new DoneMsg{id, std::move(o)};
      if (b->tsfn.NonBlockingCall(m) != napi_ok) delete m;  // the environment is going away
    });
  } catch (const std::system_error& e) {
    b->tsfn.Release();
    delete b;
    throw Napi::Error::New(env, std::string("spliceBidirectional: cannot start the poller: ") + e.what());
  }
  // Registered after the TSFN so that it runs before the TSFN's own cleanup.
  napi_add_env_cleanup_hook(env, DestroyBinding, b);
  std::lock_guard<std::mutex> l(bindingsMu);
  bindings[env] = b;
  return b;
}

void OnDoneJs(Napi::Env env, Napi::Function, SpliceBinding* b, DoneMsg* raw) {
  std::unique_ptr<DoneMsg> m(raw);
  if (env == nullptr) return;  // teardown: nobody is waiting any more
  auto it = b->pending.find(m->id);
  if (it == b->pending.end()) return;
  Napi::Promise::Deferred d = it->second;
  b->pending.erase(it);
  if (--b->active == 0) b->tsfn.Unref(env);
  const SpliceOutcome& o = m->outcome;
  Napi::Object r = Napi::Object::New(env);
  r.Set("aToB", Napi::Number::New(env, static_cast<double>(o.aToB)));
  r.Set("bToA", Napi::Number::New(env, static_cast<double>(o.bToA)));
  if (o.err != 0) {
    r.Set("error", Napi::String::New(env, ErrnoName(o.err) + ": " + std::strerror(o.err) + " (" + o.where + ")"));
    r.Set("code", Napi::String::New(env, ErrnoName(o.err)));
  } else if (o.aborted) {
    r.Set("error", Napi::String::New(env, "aborted"));
    r.Set("code", Napi::String::New(env, "ABORTED"));
  }
  d.Resolve(r);
}

int FdArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  Napi::Env env = info.Env();
  if (info.Length() <= i || !info[i].IsNumber()) {
    throw Napi::TypeError::New(env, std::string("spliceBidirectional: ") + name + " must be a file descriptor number");
  }
  double d = info[i].As<Napi::Number>().DoubleValue();
  if (d < 0 || d > 2147483647 || d != static_cast<int>(d)) {
    throw Napi::TypeError::New(env, std::string("spliceBidirectional: ") + name + " must be a file descriptor number");
  }
  return static_cast<int>(d);
}

Napi::Value SpliceBidirectional(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int a = FdArg(info, 0, "fdA");
  int b = FdArg(info, 1, "fdB");
  if (a == b) throw Napi::TypeError::New(env, "spliceBidirectional: fdA and fdB are the same descriptor");
  SpliceBinding* bind = GetBinding(env);
  uint64_t id;
  try {
    id = bind->poller->Add(a, b);
  } catch (const std::system_error& e) {
    Napi::Error err = Napi::Error::New(env, std::string("spliceBidirectional: ") + e.what());
    err.Set("code", Napi::String::New(env, "FERRY_ERR_SPLICE"));
    err.Set("errno", Napi::Number::New(env, e.code().value()));
    throw err;
  } catch (const std::exception& e) {
    Napi::Error err = Napi::Error::New(env, std::string("spliceBidirectional: ") + e.what());
    err.Set("code", Napi::String::New(env, "FERRY_ERR_SPLICE"));
    throw err;
  }
  Napi::Promise::Deferred d = Napi::Promise::Deferred::New(env);
  bind->pending.emplace(id, d);
  if (bind->active++ == 0) bind->tsfn.Ref(env);
  Napi::Promise p = d.Promise();
  p.Set("handle", Napi::Number::New(env, static_cast<double>(id)));
  return p;
}

Napi::Value SpliceAbort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(env, "spliceAbort: the argument must be a handle number");
  double h = info[0].As<Napi::Number>().DoubleValue();
  if (h < 1 || h != static_cast<double>(static_cast<uint64_t>(h))) return Napi::Boolean::New(env, false);
  std::lock_guard<std::mutex> l(bindingsMu);
  auto it = bindings.find(env);
  if (it == bindings.end()) return Napi::Boolean::New(env, false);
  return Napi::Boolean::New(env, it->second->poller->Abort(static_cast<uint64_t>(h)));
}

}  // namespace

void RegisterSplice(Napi::Env env, Napi::Object exports) {
  exports.Set("spliceBidirectional", Napi::Function::New(env, SpliceBidirectional, "spliceBidirectional"));
  exports.Set("spliceAbort", Napi::Function::New(env, SpliceAbort, "spliceAbort"));
}

}  // namespace ferry

// routeWatch(onChange) → { close() }: tells JS, as it happens, that an address or a link of this
// network namespace changed, so a NodePort set that follows the host's addresses (ebpf and
// userspace modes with nodePortAddresses unset, CIDR-valued --nodeport-addresses in every mode)
// is rewritten within milliseconds instead of at the next periodic sync.
//
// A netlink route socket subscribed to RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR and RTMGRP_LINK
// (an interface going down takes its addresses out of what the host lists), polled on the main
// loop. It carries no data to JS: the caller lists the addresses again, which is what tells it
// whether the SET changed (a link flap or an IPv6 address finishing DAD changes nothing). What
// arrived in one wake-up is drained and reported once. Lost notifications (ENOBUFS) count as a
// change — also when the kernel's mark of them reaches the poll first: a burst of thousands of
// address changes (userspace mode puts every ClusterIP on its interface at once) overruns the
// socket's buffer, the socket gets an error, and libuv reports POLLERR as UV_EBADF and stops the
// handle; the watch then reads the error, drains and polls again. An unexpected socket error (or a
// descriptor that is really gone) stops the watch and is passed to onChange as a string, so the
// caller can fall back to listing at every sync.
#include <napi.h>
#include <uv.h>

#include <errno.h>
#include <fcntl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <memory>
#include <string>

#include "netlink_drain.h"

namespace ferry {
namespace {

struct RouteWatch;

// What the JS handle holds: the watch until it stops, by close() or by an error of its own (after
// which the watch is freed: close() must not reach it).
struct RouteWatchRef {
  RouteWatch* w = nullptr;
};

struct RouteWatch {
  uv_poll_t poll;
  int fd = -1;
  napi_env env = nullptr;
  Napi::ThreadSafeFunction tsfn;
  bool stopped = false;
  std::shared_ptr<RouteWatchRef> ref;
};

void RouteWatchHook(void* arg);

// `abort`: a close() by the caller, after which nothing may be delivered, not even a change
// queued before it (the queue is dropped). A watch that stops itself releases instead, so its
// error message, queued just before, still reaches the callback.
void StopRouteWatch(RouteWatch* w, bool fromHook, bool abort = false) {
  if (w->stopped) return;
  w->stopped = true;
  if (w->ref) w->ref->w = nullptr;
  w->ref.reset();
  uv_poll_stop(&w->poll);
  if (abort) {
    w->tsfn.Abort();
  } else {
    w->tsfn.Release();
  }
  if (!fromHook) napi_remove_env_cleanup_hook(w->env, RouteWatchHook, w);
  // The handle's memory must outlive the loop's use of it: freed in the close callback.
  uv_close(reinterpret_cast<uv_handle_t*>(&w->poll), [](uv_handle_t* h) {
    RouteWatch* w = static_cast<RouteWatch*>(h->data);
    if (w->fd >= 0) ::close(w->fd);
    delete w;
  });
}

void RouteWatchHook(void* arg) { StopRouteWatch(static_cast<RouteWatch*>(arg), true); }

void Report(RouteWatch* w, std::string error) {
  w->tsfn.NonBlockingCall([error](Napi::Env env, Napi::Function cb) {
    if (env == nullptr) return;  // teardown
    if (error.empty()) {
      cb.Call({});
    } else {
      cb.Call({Napi::String::New(env, error)});
    }
  });
}

void OnReadable(uv_poll_t* h, int status, int) {
  RouteWatch* w = static_cast<RouteWatch*>(h->data);
  if (w->stopped) return;
  bool changed = false;
  if (status < 0) {
    // POLLERR (reported as UV_EBADF) on a descriptor that is still ours: the socket's pending
    // error, ENOBUFS when notifications were dropped. Read it (that clears it), then go on.
    int soErr = 0;
    socklen_t len = sizeof(soErr);
    bool ours = fcntl(w->fd, F_GETFD) >= 0;
    if (ours && getsockopt(w->fd, SOL_SOCKET, SO_ERROR, &soErr, &len) == 0 && (soErr == ENOBUFS || soErr == 0)) {
      changed = true;
      int r = uv_poll_start(&w->poll, UV_READABLE, OnReadable);
      if (r != 0) {
        Report(w, std::string("poll the route netlink socket again: ") + uv_strerror(r));
        StopRouteWatch(w, false);
        return;
      }
    } else {
      std::string e = std::string("poll the route netlink socket: ") + (soErr != 0 ? strerror(soErr) : uv_strerror(status));
      Report(w, e);
      StopRouteWatch(w, false);
      return;
    }
  }
  int err = DrainNotifications(w->fd, &changed);
  if (err != 0) {
    Report(w, std::string("read address and link changes: ") + strerror(err));
    StopRouteWatch(w, false);
    return;
  }
  if (changed) Report(w, "");
}

Napi::Value RouteWatchStart(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsFunction()) throw Napi::TypeError::New(env, "routeWatch: the argument must be a function (onChange)");
  int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_ROUTE);
  if (fd < 0) throw Napi::Error::New(env, std::string("routeWatch: open a netlink route socket: ") + strerror(errno));
  struct sockaddr_nl sa;
  memset(&sa, 0, sizeof(sa));
  sa.nl_family = AF_NETLINK;
  sa.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR | RTMGRP_LINK;
  if (bind(fd, reinterpret_cast<struct sockaddr*>(&sa), sizeof(sa)) < 0) {
    int e = errno;
    ::close(fd);
    throw Napi::Error::New(env, std::string("routeWatch: subscribe to address and link changes: ") + strerror(e));
  }
  uv_loop_t* loop = nullptr;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || loop == nullptr) {
    ::close(fd);
    throw Napi::Error::New(env, "routeWatch: no event loop");
  }
  auto* w = new RouteWatch();
  w->fd = fd;
  w->env = env;
  w->poll.data = w;
  int r = uv_poll_init(loop, &w->poll, fd);
  if (r != 0) {
    ::close(fd);
    delete w;
    throw Napi::Error::New(env, std::string("routeWatch: poll the socket: ") + uv_strerror(r));
  }
  w->tsfn = Napi::ThreadSafeFunction::New(env, info[0].As<Napi::Function>(), "ferry.routeWatch", 0, 1);
  // Neither the socket nor the callback keeps the process alive: a daemon has other reasons.
  w->tsfn.Unref(env);
  uv_unref(reinterpret_cast<uv_handle_t*>(&w->poll));
  r = uv_poll_start(&w->poll, UV_READABLE, OnReadable);
  if (r != 0) {
    StopRouteWatch(w, true);
    throw Napi::Error::New(env, std::string("routeWatch: poll the socket: ") + uv_strerror(r));
  }
  napi_add_env_cleanup_hook(env, RouteWatchHook, w);
  auto ref = std::make_shared<RouteWatchRef>();
  ref->w = w;
  w->ref = ref;
  Napi::Object o = Napi::Object::New(env);
  o.Set("close", Napi::Function::New(
                     env,
                     [ref](const Napi::CallbackInfo& info) -> Napi::Value {
                       if (ref->w != nullptr) StopRouteWatch(ref->w, false, true);
                       ref->w = nullptr;
                       return info.Env().Undefined();
                     },
                     "close"));
  return o;
}

}  // namespace

void RegisterRouteWatch(Napi::Env env, Napi::Object exports) {
  exports.Set("routeWatch", Napi::Function::New(env, RouteWatchStart, "routeWatch"));
}

}  // namespace ferry

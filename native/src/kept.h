// One handle kept open between calls, shared by calls that may overlap: a call that finds it
// busy gets a fresh handle of its own, closed after. Used for the NETLINK_NETFILTER sockets
// (nfnl.cc, conntrack.cc): closing one makes nf_tables flush its pending transaction-destroy work,
// an RCU grace period under the commit mutex (see KeptSocket's comment in nfnl.cc).
#pragma once

#include <mutex>

namespace ferry {

template <typename H, H kNone>
class Kept {
 public:
  struct Lease {
    H h = kNone;
    bool kept = false;
  };

  explicit Kept(int (*close)(H)) : close_(close) {}

  // The kept handle when `keepable` and it is free (opened on first use), else `open()`'s own.
  // `open` returns kNone on failure, and then so does the lease.
  template <typename Open>
  Lease Take(bool keepable, Open open) {
    if (keepable) {
      std::lock_guard<std::mutex> l(mu_);
      if (!busy_) {
        if (h_ == kNone) h_ = open();
        if (h_ == kNone) return Lease{};
        busy_ = true;
        return Lease{h_, true};
      }
    }
    return Lease{open(), false};
  }

  // `clean`: every answer was read, so the next user starts from an empty queue. A handle that
  // was not (an overrun, a failed call, a dump cut short) is closed instead of kept.
  void Return(const Lease& lease, bool clean) {
    ReturnLease(lease, clean);
  }

  // Holds a lease for one call and returns it, as not clean, if the call leaves without returning
  // it (an exception on the way, std::bad_alloc under memory pressure): the kept handle must not
  // stay busy for the life of the process, with every later call paying a socket of its own.
  class Holder {
   public:
    Holder(Kept& k, const Lease& lease) : k_(k), lease_(lease) {}
    Holder(const Holder&) = delete;
    Holder& operator=(const Holder&) = delete;
    ~Holder() {
      if (!returned_) k_.ReturnLease(lease_, false);
    }
    void Return(bool clean) {
      if (returned_) return;
      returned_ = true;
      k_.ReturnLease(lease_, clean);
    }

   private:
    Kept& k_;
    Lease lease_;
    bool returned_ = false;
  };

 private:
  void ReturnLease(const Lease& lease, bool clean) {
    if (lease.h == kNone) return;
    if (!lease.kept) {
      close_(lease.h);
      return;
    }
    std::lock_guard<std::mutex> l(mu_);
    if (!clean) {
      close_(h_);
      h_ = kNone;
    }
    busy_ = false;
  }

  int (*const close_)(H);
  std::mutex mu_;
  H h_ = kNone;
  bool busy_ = false;
};

}  // namespace ferry

// Zero-copy forwarding for the userspace proxy: splice(2) moves bytes between two connected TCP
// sockets through a pipe per direction, so they never enter the process's memory. One poller
// thread per JS environment watches every forwarded connection with epoll (edge-triggered).
//
// The engine (SplicePoller) never touches a JS value and never closes the caller's fds: it works
// on its own dup()s of them, so Node may close its sockets at any time without the engine ever
// acting on a recycled fd number. RegisterSplice() adds the JS surface (spliceBidirectional,
// spliceAbort) to the addon's exports.
#pragma once

#include <napi.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace ferry {

// How one forwarded connection ended. err == 0 and !aborted: both directions saw EOF, passed it
// on with shutdown(SHUT_WR) and flushed everything.
struct SpliceOutcome {
  uint64_t aToB = 0;   // bytes written to b that were read from a
  uint64_t bToA = 0;
  int err = 0;         // errno that stopped both directions, 0 if none
  std::string where;   // which step failed ("splice from a", "socket b", ...)
  bool aborted = false;
};

class SplicePoller {
 public:
  // Called on the poller thread once per connection, after the poller has closed its dups and pipes.
  using Done = std::function<void(uint64_t id, SpliceOutcome&& outcome)>;

  // Starts the poller thread. Throws std::system_error when epoll/eventfd cannot be created.
  explicit SplicePoller(Done done);
  // Stops the thread and releases every connection's dups and pipes without calling Done.
  ~SplicePoller();
  SplicePoller(const SplicePoller&) = delete;
  SplicePoller& operator=(const SplicePoller&) = delete;

  // Starts forwarding between the connected, non-blocking TCP sockets fdA and fdB; returns the
  // connection's id (> 0). Throws std::system_error (dup, pipe) or std::invalid_argument
  // (not a socket, blocking). Thread-safe.
  uint64_t Add(int fdA, int fdB);
  // Ends a connection: Done follows with aborted = true. False when the id is not (or no longer)
  // forwarding. Thread-safe.
  bool Abort(uint64_t id);

  struct Conn;

 private:
  enum class PumpResult { Idle, More, Done };

  void Run();
  void TakeCommands(bool* stop);
  void Enqueue(Conn* c);
  PumpResult Pump(Conn* c);
  void Finish(Conn* c);
  static void Release(Conn* c);

  Done done_;
  int epfd_ = -1;
  int wakefd_ = -1;

  std::mutex mu_;  // guards the fields up to thread_
  uint64_t nextId_ = 1;
  bool stop_ = false;
  std::vector<Conn*> adds_;
  std::vector<uint64_t> aborts_;
  std::unordered_set<uint64_t> live_;

  std::thread thread_;
  // Owned by the poller thread.
  std::unordered_map<uint64_t, Conn*> conns_;
  std::vector<Conn*> ready_;
};

// Adds spliceBidirectional(fdA, fdB) and spliceAbort(handle) to the addon's exports.
void RegisterSplice(Napi::Env env, Napi::Object exports);

}  // namespace ferry

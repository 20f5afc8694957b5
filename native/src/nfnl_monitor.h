// The tamper watch's kernel side: a NETLINK_NETFILTER socket subscribed to NFNLGRP_NFTABLES,
// read by a thread of its own. It folds every notification of one transaction (the kernel sends
// a transaction's object notifications, then its NFT_MSG_NEWGEN) into one summary, keeping only
// the objects of the watched tables, so a 700k-element full sync of ferry's own costs one event
// in JS, not 700k. Never touches a JS value: events go out through a callback (a TSFN in
// addon.cc).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace ferry {

// Objects of one kind touched by a transaction: e.g. 12 × NFT_MSG_DELRULE in `ip ferry services`.
struct MonitorChange {
  uint8_t msgType = 0;  // NFT_MSG_NEWTABLE .. NFT_MSG_DELFLOWTABLE
  uint8_t family = 0;   // NFPROTO_IPV4 (2), NFPROTO_IPV6 (10), ...
  std::string table;
  std::string name;  // the table, chain, set/map, object; for rules the chain, for elements the set
  uint32_t count = 0;
};

struct MonitorEvent {
  enum Kind { kGeneration, kOverrun, kError } kind = kGeneration;
  // kGeneration: one committed transaction that touched a watched table.
  uint32_t genId = 0;
  uint32_t procPid = 0;  // NFTA_GEN_PROC_PID: the committing THREAD's id, in the init pid namespace
  std::string procName;  // NFTA_GEN_PROC_NAME
  uint32_t portid = 0;   // the committing socket's netlink port id (nlmsg_pid of NEWGEN)
  bool own = false;      // that socket was one of this process's nfnlBatch sockets
  std::vector<MonitorChange> changes;
  uint32_t more = 0;  // notifications not itemized (too many distinct objects)
  // kOverrun: the receive buffer overflowed; notifications were lost.
  bool ownRecent = false;  // one of this process's batches was in flight or ended < 2 s ago
  // kError: the socket failed; the monitor has ended.
  std::string error;
};

class NfnlMonitor {
 public:
  // Opens and subscribes the socket (in `netns`, a path such as /var/run/netns/NAME, or the
  // process's namespace when empty) on the monitor's own thread and returns once it listens;
  // throws std::runtime_error with the failing step when it cannot.
  NfnlMonitor(const std::string& netns, std::vector<std::string> tables, int rcvbuf, std::function<void(MonitorEvent&&)> deliver);
  ~NfnlMonitor();
  // Ends the thread and closes the socket; no event is delivered after it returns. Idempotent.
  void Stop();

 private:
  void Run();
  friend int PauseMonitors(uint64_t nsIno);
  friend void ResumeMonitors(uint64_t nsIno);
  int fd_ = -1;
  // Batches in flight that asked for quiet (PauseMonitors); the group is left while > 0.
  int paused_ = 0;
  // Set by ResumeMonitors: notifications were not received for a while; Run() reports an overrun.
  std::atomic<bool> gap_{false};
  std::atomic<bool> stop_{false};
  int wakefd_ = -1;
  uint64_t nsIno_ = 0;
  std::vector<std::string> tables_;
  std::function<void(MonitorEvent&&)> deliver_;
  std::thread thread_;
};

// Bookkeeping of this process's own batches (nfnl.cc calls these around every sendmsg), so that
// a NEWGEN can be attributed by the port id of the socket that committed it. Port ids are unique
// per network namespace while bound, hence the namespace's inode.
void NoteOwnBatchStart(uint64_t nsIno, uint32_t portid);
void NoteOwnBatchEnd(uint64_t nsIno, uint32_t portid);
// A large batch of ferry's own makes the kernel build one notification per object for every
// subscriber of NFNLGRP_NFTABLES — measured at 44k Services × 10 endpoints (a 55 MB batch): 8.7–17 s
// in sendmsg with the tamper watch subscribed, 2.1–2.3 s without — and the watch could not read
// them all anyway (its buffer overruns, and it falls back to the canary check). So around a batch
// of at least kQuietBatchBytes, nfnl.cc takes this process's monitors in that namespace out of the
// group, and puts them back after the commit; each then reports an overrun with ownRecent set,
// exactly what a flood of ferry's own notifications would have produced: the canary check runs.
// Returns how many monitors were paused.
constexpr size_t kQuietBatchBytes = 1 << 20;
int PauseMonitors(uint64_t nsIno);
void ResumeMonitors(uint64_t nsIno);
// The inode of a namespace file (`/var/run/netns/NAME`), or of this process's when empty; 0 if unknown.
uint64_t NetnsInode(const std::string& netns);

}  // namespace ferry

// nf_tables over a raw NETLINK_NETFILTER socket: the batch bytes come ready-made from
// TypeScript (src/backends/nftables/netlink.ts); this side only sends and reads the answers.
// Must never be called with a JS value: it runs on the thread pool.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace ferry {

struct NfnlError {
  uint32_t seq = 0;     // the failing message's sequence number, as the encoder wrote it
  int err = 0;          // positive errno
  int32_t offset = -1;  // extack: byte offset of the offending attribute in that message, or -1
  std::string msg;      // extack: the kernel's message, if any
};

struct NfnlBatchResult {
  bool ok = false;
  std::vector<NfnlError> errors;
  // A failure of the socket itself (no kernel verdict): "socket: Permission denied" etc.
  std::string sysError;
};

// Sends a whole nf_tables batch (BATCH_BEGIN .. BATCH_END, already encoded) in ONE sendmsg, so
// the kernel handles it as one transaction, then collects the error messages it queued. Acks are
// not requested by the encoder, so only failing messages answer. `netns`: a path such as
// /var/run/netns/NAME to act in, or empty for the calling process's namespace, where the socket
// is kept open between calls (see KeptSocket in nfnl.cc: closing one costs a grace period).
NfnlBatchResult NfnlBatch(const uint8_t* data, size_t len, const std::string& netns);

struct NfnlDumpResult {
  bool ok = false;
  int err = 0;  // the kernel's errno; EINTR also when a commit landed during the dump (NLM_F_DUMP_INTR)
  std::string sysError;
  std::vector<uint8_t> data;  // the answering messages, concatenated, NLMSG_DONE excluded; empty unless ok
};

// Sends one dump request (already encoded, NLM_F_DUMP set) and returns every answer message, up
// to NLMSG_DONE or an ACK of the request's sequence number. An answer the kernel marked
// NLM_F_DUMP_INTR is EINTR (ask again); no message for 10 s is a sysError naming the request.
NfnlDumpResult NfnlDump(const uint8_t* req, size_t len, const std::string& netns);

// The namespace this thread is stuck in (a setns back to the process's failed), or nullptr. Such
// a thread refuses netlink work: what it opened would act on the other namespace.
const char* ThreadStranded();

}  // namespace ferry

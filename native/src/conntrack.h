// Conntrack entries through ctnetlink (libnetfilter_conntrack): dump with a filter, delete matches.
// Acts on the network namespace of the calling process. Never touches JS values: runs on the
// thread pool.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ferry {

struct CtAddr {
  bool set = false;
  uint8_t bytes[16] = {0};  // 4 used for IPv4, network order
};

struct CtFilter {
  uint8_t family = 0;   // AF_INET or AF_INET6
  uint8_t protocol = 0; // IPPROTO_TCP / IPPROTO_UDP / IPPROTO_SCTP
  CtAddr origDst;
  int origDstPort = -1;  // -1 = any
  CtAddr replySrc;
  int replySrcPort = -1;
};

struct CtEntry {
  uint8_t family = 0;
  uint8_t protocol = 0;
  std::string origSrc, origDst, replySrc, replyDst;
  uint16_t origSrcPort = 0, origDstPort = 0, replySrcPort = 0, replyDstPort = 0;
};

struct CtResult {
  int err = 0;             // errno of the first failure, 0 when all went well
  std::string errContext;  // which step failed
  uint32_t deleted = 0;
  std::vector<CtEntry> entries;
};

// Lists entries matching every set field of the filter.
CtResult ConntrackList(const CtFilter& f);
// Deletes the entries that match every set field of at least one filter, reading each family's
// table once; entries that vanish between the dump and the delete (ENOENT) are not errors and are
// not counted. A failed dump deletes nothing; a failed delete does not stop the others; the first
// error is reported.
CtResult ConntrackDelete(const std::vector<CtFilter>& filters);

}  // namespace ferry

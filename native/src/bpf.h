// The ebpf mode's kernel side: loading native/bpf's object with libbpf, attaching its cgroup
// programs through pinned links, and batched map element updates, deletes and dumps on pinned
// maps. Engine functions never touch a JS value; RegisterBpf() adds the JS surface.
//
// Pins (maps and links) live in one bpffs directory per owner, so a restarted ferry finds the
// maps it left (libbpf reuses pins by name) and replaces each link's program in place
// (bpf_link_update): the data path never goes without a program. Removing the directory's pins
// detaches and frees everything.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ferry {

struct BpfError {
  int err = 0;          // errno, 0 = success
  std::string where;    // which step failed, with the object it acted on
  std::string detail;   // libbpf's own words, when it printed any
  bool badArgs = false; // the caller's arguments do not fit the object (JS: a RangeError)
};

struct BpfLoadOptions {
  std::string object;   // path of the compiled BPF object
  std::string pinDir;   // bpffs directory for maps and links (must exist)
  std::string cgroup;   // cgroup v2 directory to attach to
  uint32_t ctEntries = 0;  // ferry_ct's size in entries (0: as compiled); both objects declare it
  // The cookie of the network namespace the process runs in, for sock_lb.c's ferry_host_netns
  // (localhost NodePorts only there); 0 = unknown, the program then takes the initial namespace's.
  uint64_t hostNetns = 0;
};

struct BpfLoadResult {
  BpfError error;
  std::vector<std::string> attached;   // programs attached anew
  std::vector<std::string> replaced;   // programs swapped into an existing pinned link
  std::vector<std::string> unpinned;   // pinned maps of another layout, removed (created anew)
};

BpfLoadResult BpfLoadAndAttach(const BpfLoadOptions& opts);
// The tc program's SNAT source ports: [loMin, loMin + loCount) and [hiMin, hiMin + hiCount).
struct BpfSnatPorts {
  uint16_t loMin, loCount, hiMin, hiCount;
};
// Connection-tracking timeouts in seconds (tc_lb.c's struct ct_timeouts).
struct BpfCtTimeouts {
  uint32_t established, closeWait, udp, udpStream;
};
// tc: loads the tc object (maps reused by pin name) and pins its program under pinDir; ports
// and timeouts (when given) replace the object's defaults.
// ctEntries: ferry_ct's size (0: as compiled). unpinned: pinned maps whose layout (type, sizes,
// flags) differs from the object's, removed first.
BpfError BpfTcLoad(const std::string& object, const std::string& pinDir, const BpfSnatPorts* ports, const BpfCtTimeouts* timeouts, uint32_t ctEntries, std::vector<std::string>* unpinned);
// Attaches (or replaces, atomically) the pinned tc program on clsact ingress of each named
// interface of this network namespace, recording each in the pinned ferry_tcif map.
BpfError BpfTcAttach(const std::string& pinDir, const std::vector<std::string>& names, std::vector<std::string>* attached);
// Detaches ferry's filter from every interface ferry_tcif records (and the clsact qdiscs ferry made).
BpfError BpfTcDetach(const std::string& pinDir, std::vector<std::string>* detached);
// Loads the object without pinning or attaching (maps shrunk): proves this kernel accepts it.
BpfError BpfProbe(const std::string& object);

// Connected UDP sockets (native/bpf/sock_term.c), in each network namespace named (nsfs paths):
// termKeys null lists every connected UDP socket (its backend and the frontend it asked for, from
// the pinned ferry_rev); else destroys those whose (frontend, backend) is one of the termCount
// keys of keySize bytes (bpf_sock_destroy, Linux 6.5+). records: 64-byte sock_recs of the sockets
// listed or destroyed. gone: namespaces whose file had disappeared (skipped).
struct BpfUdpSocketsOptions {
  std::string object;
  std::string pinDir;
  std::vector<std::string> netns;
  const uint8_t* termKeys = nullptr;
  uint32_t termCount = 0;
  uint32_t keySize = 0;
};
struct BpfUdpSocketsResult {
  BpfError error;
  std::string records;
  std::vector<std::string> gone;
};
BpfUdpSocketsResult BpfUdpSockets(const BpfUdpSocketsOptions& opts);

void RegisterBpf(Napi::Env env, Napi::Object exports);

}  // namespace ferry

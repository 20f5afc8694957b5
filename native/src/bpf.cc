// See bpf.h.
#include "bpf.h"

#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/socket.h>
#include <sched.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <mutex>
#include <thread>

#include "js_args.h"
#include "promise_worker.h"

// The kernel's "operation not supported" for BPF commands, not in libc's errno.h.
#ifndef ENOTSUPP
#define ENOTSUPP 524
#endif

namespace ferry {
namespace {

// libbpf prints its reasons (verifier log, pin mismatches); keep the last 16 KiB for errors:
// the verifier's verdict is at the end of its log.
std::mutex logMu;
std::string* logSink = nullptr;
constexpr size_t kLogKeep = 16384;
constexpr const char* kCtMap = "ferry_ct";
// sock_lb.c's global for the node's network namespace cookie (localhost NodePorts only there).
constexpr const char* kHostNetnsVar = "ferry_host_netns";

int LibbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  int n = vsnprintf(buf, sizeof(buf), fmt, args);
  std::lock_guard<std::mutex> lock(logMu);
  if (logSink) {
    logSink->append(buf);
    if (logSink->size() > 2 * kLogKeep) logSink->erase(0, logSink->size() - kLogKeep);
  }
  return n;
}

struct LogCapture {
  std::string text;
  LogCapture() {
    std::lock_guard<std::mutex> lock(logMu);
    logSink = &text;
    libbpf_set_print(LibbpfPrint);
  }
  ~LogCapture() {
    std::lock_guard<std::mutex> lock(logMu);
    logSink = nullptr;
  }
  std::string Take() {
    std::lock_guard<std::mutex> lock(logMu);
    return text.size() > kLogKeep ? text.substr(text.size() - kLogKeep) : text;
  }
};

// One load at a time: the libbpf print hook is process-wide.
std::mutex loadMu;

// bpf_object__load with this thread's signals blocked: the verifier gives up with EAGAIN when a
// signal is pending (a profiler's SIGPROF, SIGCHLD of a child process), and a program it takes
// 0.1-0.2 s to verify met one on most loads under `node --cpu-prof`. Pending signals are
// delivered once unblocked.
int LoadQuietly(struct bpf_object* obj) {
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  int err = bpf_object__load(obj);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return err;
}

BpfError Fail(int err, std::string where, LogCapture* log = nullptr) {
  BpfError e;
  e.err = err < 0 ? -err : err;
  if (e.err == 0) e.err = EINVAL;
  e.where = std::move(where);
  if (log) e.detail = log->Take();
  return e;
}

// The cgroup a pinned link is attached to, or 0 if it cannot tell.
uint64_t LinkCgroup(int linkFd) {
  struct bpf_link_info info;
  memset(&info, 0, sizeof(info));
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(linkFd, &info, &len) != 0) return 0;
  if (info.type != BPF_LINK_TYPE_CGROUP) return 0;
  return info.cgroup.cgroup_id;
}

// Removes the pins of maps this object declares with another layout (an older ferry's: a map's
// type, key or value size, size or flags changed), so that the load creates them anew instead of
// failing on "parameter mismatch". Their entries are lost: ferry's full sync rewrites the maps it
// writes; the programs' own state (connection tracking, affinity) starts empty. Names go to `out`.
void UnpinIncompatible(struct bpf_object* obj, std::vector<std::string>* out) {
  struct bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    const char* path = bpf_map__pin_path(map);
    if (!path) continue;
    int fd = bpf_obj_get(path);
    if (fd < 0) continue;  // not pinned yet
    struct bpf_map_info info;
    memset(&info, 0, sizeof(info));
    uint32_t len = sizeof(info);
    bool same = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && info.type == static_cast<uint32_t>(bpf_map__type(map)) &&
                info.key_size == bpf_map__key_size(map) && info.value_size == bpf_map__value_size(map) &&
                info.max_entries == bpf_map__max_entries(map) && info.map_flags == bpf_map__map_flags(map);
    close(fd);
    if (!same && unlink(path) == 0) out->push_back(bpf_map__name(map));
  }
}

// The connection-tracking map's size, set on an opened object before UnpinIncompatible looks at
// it: both objects declare ferry_ct, so both must ask for the same size, or each load would find
// the other's pin of another size and replace it. 0 keeps the compiled size.
int SizeConntrack(struct bpf_object* obj, uint32_t entries) {
  if (entries == 0) return 0;
  struct bpf_map* map = bpf_object__find_map_by_name(obj, kCtMap);
  if (!map) return -ENOENT;
  return bpf_map__set_max_entries(map, entries);
}

}  // namespace

static int SetRodataVar(struct bpf_object* obj, const char* name, const void* value, size_t size);

BpfLoadResult BpfLoadAndAttach(const BpfLoadOptions& opts) {
  std::lock_guard<std::mutex> guard(loadMu);
  LogCapture log;
  BpfLoadResult r;
  struct stat cg;
  if (stat(opts.cgroup.c_str(), &cg) != 0) {
    r.error = Fail(errno, "stat cgroup " + opts.cgroup);
    return r;
  }
  DECLARE_LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = opts.pinDir.c_str());
  struct bpf_object* obj = bpf_object__open_file(opts.object.c_str(), &oo);
  if (!obj) {
    r.error = Fail(errno, "open BPF object " + opts.object, &log);
    return r;
  }
  if (int e = SizeConntrack(obj, opts.ctEntries)) {
    r.error = Fail(e, std::string("size ") + kCtMap + " in " + opts.object, &log);
    bpf_object__close(obj);
    return r;
  }
  if (opts.hostNetns != 0) {
    if (int e = SetRodataVar(obj, kHostNetnsVar, &opts.hostNetns, sizeof(opts.hostNetns))) {
      r.error = Fail(e, std::string("set ") + kHostNetnsVar + " (the node's network namespace) in " + opts.object, &log);
      bpf_object__close(obj);
      return r;
    }
  }
  UnpinIncompatible(obj, &r.unpinned);
  int err = LoadQuietly(obj);
  if (err) {
    r.error = Fail(err, "load BPF object " + opts.object + " (maps pinned under " + opts.pinDir + ")", &log);
    bpf_object__close(obj);
    return r;
  }
  int cgfd = open(opts.cgroup.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (cgfd < 0) {
    r.error = Fail(errno, "open cgroup " + opts.cgroup);
    bpf_object__close(obj);
    return r;
  }
  struct bpf_program* prog;
  bpf_object__for_each_program(prog, obj) {
    std::string name = bpf_program__name(prog);
    std::string pin = opts.pinDir + "/link_" + name;
    int linkFd = bpf_obj_get(pin.c_str());
    if (linkFd >= 0) {
      // A previous ferry's link: swap the program in place when it is on the same cgroup.
      if (LinkCgroup(linkFd) == static_cast<uint64_t>(cg.st_ino)) {
        if (bpf_link_update(linkFd, bpf_program__fd(prog), nullptr) == 0) {
          r.replaced.push_back(name);
          close(linkFd);
          continue;
        }
        int e = errno;
        close(linkFd);
        r.error = Fail(e, "replace the program of pinned link " + pin);
        break;
      }
      // Attached elsewhere (the cgroup root changed): drop the old link, attach anew.
      close(linkFd);
      unlink(pin.c_str());
    }
    struct bpf_link* link = bpf_program__attach_cgroup(prog, cgfd);
    if (!link) {
      r.error = Fail(errno, "attach " + name + " to cgroup " + opts.cgroup, &log);
      break;
    }
    err = bpf_link__pin(link, pin.c_str());
    if (err) {
      r.error = Fail(err, "pin link " + pin, &log);
      bpf_link__destroy(link);
      break;
    }
    r.attached.push_back(name);
    // The pin keeps the link (and its program) attached; destroying a cgroup link object only
    // closes our fd (never disconnect it: that would leak the fd and keep the link alive after
    // its pin is removed).
    bpf_link__destroy(link);
  }
  close(cgfd);
  bpf_object__close(obj);
  return r;
}

// ---- connected UDP sockets (native/bpf/sock_term.c) ----

namespace {

constexpr const char* kRevMap = "ferry_rev";
constexpr const char* kTermMap = "ferry_sockterm";
constexpr size_t kSockRecSize = 64;  // sock_term.c's struct sock_rec

// Runs the iterator behind `linkFd` once in each network namespace of `netns` (paths of nsfs
// files, such as /proc/PID/ns/net), appending what it writes to `out`. On a thread of its own:
// an iterator walks the namespace of the thread that creates it, and setns() moves only the
// calling thread, which then ends — the caller's thread (libuv's pool) never changes namespace.
// A namespace whose file is gone (its last process exited) is skipped and named in `gone`.
BpfError IterateInEach(int linkFd, const std::vector<std::string>& netns, std::string* out, std::vector<std::string>* gone) {
  BpfError result;
  std::thread t([&]() {
    std::vector<char> buf(65536);
    for (const std::string& path : netns) {
      int nsfd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (nsfd < 0) {
        if (errno == ENOENT || errno == ESRCH) {
          gone->push_back(path);
          continue;
        }
        result = Fail(errno, "open network namespace " + path);
        return;
      }
      int err = setns(nsfd, CLONE_NEWNET) == 0 ? 0 : errno;
      close(nsfd);
      if (err) {
        result = Fail(err, "enter network namespace " + path);
        return;
      }
      int it = bpf_iter_create(linkFd);
      if (it < 0) {
        result = Fail(errno, "create the UDP socket iterator in network namespace " + path);
        return;
      }
      for (;;) {
        ssize_t n = read(it, buf.data(), buf.size());
        if (n > 0) {
          out->append(buf.data(), static_cast<size_t>(n));
          continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) result = Fail(errno, "read the UDP socket iterator in network namespace " + path);
        break;
      }
      close(it);
      if (result.err) return;
    }
  });
  t.join();
  return result;
}

}  // namespace

BpfUdpSocketsResult BpfUdpSockets(const BpfUdpSocketsOptions& opts) {
  BpfUdpSocketsResult r;
  const bool term = opts.termKeys != nullptr;
  const char* progName = term ? "ferry_udp_term" : "ferry_udp_list";
  std::string revPin = opts.pinDir + "/" + kRevMap;
  // The socket-level programs' reverse map, by its pin: without it there is nothing to read (and
  // the object must not create one).
  int revFd = bpf_obj_get(revPin.c_str());
  if (revFd < 0) {
    r.error = Fail(errno, "open pinned map " + revPin);
    return r;
  }
  std::lock_guard<std::mutex> guard(loadMu);
  LogCapture log;
  struct bpf_object* obj = bpf_object__open_file(opts.object.c_str(), nullptr);
  if (!obj) {
    r.error = Fail(errno, "open BPF object " + opts.object, &log);
    close(revFd);
    return r;
  }
  struct bpf_map* rev = bpf_object__find_map_by_name(obj, kRevMap);
  struct bpf_map* termMap = bpf_object__find_map_by_name(obj, kTermMap);
  struct bpf_program* prog = bpf_object__find_program_by_name(obj, progName);
  int err = 0;
  if (!rev || !termMap || !prog) {
    r.error = Fail(ENOENT, std::string("find ") + kRevMap + ", " + kTermMap + " and " + progName + " in " + opts.object);
  } else if ((err = bpf_map__set_pin_path(rev, nullptr)) != 0 || (err = bpf_map__reuse_fd(rev, revFd)) != 0) {
    r.error = Fail(err, "use pinned map " + revPin + " in " + opts.object, &log);
  } else if (term && opts.termCount > 0 && (err = bpf_map__set_max_entries(termMap, opts.termCount)) != 0) {
    r.error = Fail(err, std::string("size ") + kTermMap, &log);
  }
  // Only the program asked for is loaded.
  struct bpf_program* p;
  bpf_object__for_each_program(p, obj) bpf_program__set_autoload(p, p == prog);
  if (!r.error.err && (err = LoadQuietly(obj)) != 0) r.error = Fail(err, "load BPF object " + opts.object, &log);
  close(revFd);  // the object holds its own reference once loaded
  if (r.error.err) {
    bpf_object__close(obj);
    return r;
  }
  if (term) {
    int fd = bpf_map__fd(termMap);
    uint32_t one = 1;
    for (uint32_t i = 0; i < opts.termCount; i++) {
      if (bpf_map_update_elem(fd, opts.termKeys + static_cast<size_t>(i) * opts.keySize, &one, BPF_ANY) != 0) {
        r.error = Fail(errno, std::string("write ") + kTermMap + " element " + std::to_string(i));
        bpf_object__close(obj);
        return r;
      }
    }
  }
  struct bpf_link* link = bpf_program__attach_iter(prog, nullptr);
  if (!link) {
    r.error = Fail(errno, std::string("attach the UDP socket iterator ") + progName, &log);
    bpf_object__close(obj);
    return r;
  }
  r.error = IterateInEach(bpf_link__fd(link), opts.netns, &r.records, &r.gone);
  bpf_link__destroy(link);
  bpf_object__close(obj);
  if (!r.error.err && r.records.size() % kSockRecSize != 0) r.error = Fail(EINVAL, "the UDP socket iterator wrote a partial record");
  return r;
}

// ---- tc (clsact ingress, classic attach: libbpf 1.1 has no tcx) ----

namespace {

// ferry's filter on every interface: this (handle, priority) pair, so a restart replaces exactly
// it and cleanup removes exactly it.
constexpr uint32_t kTcHandle = 0xfe77;
constexpr uint32_t kTcPriority = 1;
constexpr const char* kTcProgram = "ferry_tc_ingress";
// On clsact egress: the replies of an endpoint on a node address (tc_lb.c).
constexpr const char* kTcEgressProgram = "ferry_tc_egress";

// ferry's two tc programs: which hook each goes on.
struct TcHook {
  const char* program;
  bpf_tc_attach_point point;
  const char* pointName;
};
constexpr TcHook kTcHooks[] = {{kTcProgram, BPF_TC_INGRESS, "ingress"}, {kTcEgressProgram, BPF_TC_EGRESS, "egress"}};
constexpr const char* kTcSnatVar = "ferry_snat_ports";
constexpr const char* kTcTimeoutsVar = "ferry_ct_timeouts";

struct TcifVal {
  uint8_t ownQdisc;
  uint8_t pad[3];
  char name[16];
};

std::string TcProgPin(const std::string& pinDir, const char* program = kTcProgram) { return pinDir + "/prog_" + program; }
std::string TcifPin(const std::string& pinDir) { return pinDir + "/ferry_tcif"; }

// Is the program on this filter ferry's `program`? (By name: the kernel keeps the first 15 characters.)
bool IsFerryProg(uint32_t progId, const char* program) {
  int fd = bpf_prog_get_fd_by_id(progId);
  if (fd < 0) return false;
  struct bpf_prog_info info;
  memset(&info, 0, sizeof(info));
  uint32_t len = sizeof(info);
  bool ours = bpf_obj_get_info_by_fd(fd, &info, &len) == 0 && strncmp(info.name, program, sizeof(info.name) - 1) == 0;
  close(fd);
  return ours;
}

// Opens the pinned ferry_tcif, refusing a layout the caller cannot read: the kernel copies the
// map's own key and value sizes into the caller's buffers (a ferry_tcif pinned by another ferry
// version would overrun buffers of this one's size). `exact`: values of this version's size (the
// attach writes them); else any size that starts with this version's fields (*valueSize says
// which: cleanup reads another version's map through a buffer of its size). -1 with `err` set on
// failure; with `absentOk`, no pin is -1 with err left at 0.
int OpenTcif(const std::string& pinDir, bool absentOk, bool exact, uint32_t* valueSize, BpfError* err) {
  std::string path = TcifPin(pinDir);
  int fd = bpf_obj_get(path.c_str());
  if (fd < 0) {
    if (!(absentOk && errno == ENOENT)) *err = Fail(errno, "open pinned map " + path);
    return -1;
  }
  struct bpf_map_info info;
  memset(&info, 0, sizeof(info));
  uint32_t len = sizeof(info);
  if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
    *err = Fail(errno, "read the key and value sizes of pinned map " + path);
    close(fd);
    return -1;
  }
  if (info.key_size != sizeof(uint32_t) || (exact ? info.value_size != sizeof(TcifVal) : info.value_size < sizeof(TcifVal))) {
    *err = Fail(EINVAL, "pinned map " + path + " has keys of " + std::to_string(info.key_size) + " and values of " +
                            std::to_string(info.value_size) + " bytes, not " + std::to_string(sizeof(uint32_t)) + " and " +
                            std::to_string(sizeof(TcifVal)) + " (pinned by another ferry version?)");
    err->badArgs = true;
    close(fd);
    return -1;
  }
  if (valueSize != nullptr) *valueSize = info.value_size;
  return fd;
}

}  // namespace

// Writes a `const volatile` global of an opened (not yet loaded) object: its place in .rodata
// comes from the object's BTF. 0, or a negative errno.
static int SetRodataVar(struct bpf_object* obj, const char* name, const void* value, size_t size) {
  struct bpf_map* rodata = bpf_object__find_map_by_name(obj, ".rodata");
  struct btf* btf = bpf_object__btf(obj);
  if (!rodata || !btf) return -ENOENT;
  int sec = btf__find_by_name_kind(btf, ".rodata", BTF_KIND_DATASEC);
  if (sec < 0) return -ENOENT;
  const struct btf_type* t = btf__type_by_id(btf, sec);
  const struct btf_var_secinfo* vi = btf_var_secinfos(t);
  for (unsigned i = 0; i < btf_vlen(t); i++, vi++) {
    const struct btf_type* var = btf__type_by_id(btf, vi->type);
    if (strcmp(btf__name_by_offset(btf, var->name_off), name) != 0) continue;
    size_t total = 0;
    const char* data = static_cast<const char*>(bpf_map__initial_value(rodata, &total));
    if (!data || vi->size != size || vi->offset + size > total) return -EINVAL;
    std::string copy(data, total);
    memcpy(&copy[vi->offset], value, size);
    return bpf_map__set_initial_value(rodata, copy.data(), total);
  }
  return -ENOENT;
}

BpfError BpfTcLoad(const std::string& object, const std::string& pinDir, const BpfSnatPorts* ports, const BpfCtTimeouts* timeouts, uint32_t ctEntries, std::vector<std::string>* unpinned) {
  std::lock_guard<std::mutex> guard(loadMu);
  LogCapture log;
  DECLARE_LIBBPF_OPTS(bpf_object_open_opts, oo, .pin_root_path = pinDir.c_str());
  struct bpf_object* obj = bpf_object__open_file(object.c_str(), &oo);
  if (!obj) return Fail(errno, "open BPF object " + object, &log);
  if (ports) {
    int e = SetRodataVar(obj, kTcSnatVar, ports, sizeof(*ports));
    if (e) {
      BpfError fe = Fail(e, std::string("set ") + kTcSnatVar + " (the SNAT ports) in " + object, &log);
      bpf_object__close(obj);
      return fe;
    }
  }
  if (timeouts) {
    int e = SetRodataVar(obj, kTcTimeoutsVar, timeouts, sizeof(*timeouts));
    if (e) {
      BpfError fe = Fail(e, std::string("set ") + kTcTimeoutsVar + " (the connection-tracking timeouts) in " + object, &log);
      bpf_object__close(obj);
      return fe;
    }
  }
  if (int e = SizeConntrack(obj, ctEntries)) {
    BpfError fe = Fail(e, std::string("size ") + kCtMap + " in " + object, &log);
    bpf_object__close(obj);
    return fe;
  }
  UnpinIncompatible(obj, unpinned);
  int err = LoadQuietly(obj);
  if (err) {
    BpfError e = Fail(err, "load BPF object " + object + " (maps pinned under " + pinDir + ")", &log);
    bpf_object__close(obj);
    return e;
  }
  BpfError e;
  for (const TcHook& h : kTcHooks) {
    struct bpf_program* prog = bpf_object__find_program_by_name(obj, h.program);
    if (!prog) {
      e = Fail(ENOENT, std::string("find program ") + h.program + " in " + object);
      break;
    }
    // The pin is how later attaches (new interfaces) find the program; the filters already
    // attached keep the previous program until BpfTcAttach replaces it.
    std::string pin = TcProgPin(pinDir, h.program);
    unlink(pin.c_str());
    err = bpf_program__pin(prog, pin.c_str());
    if (err) {
      e = Fail(err, "pin program " + pin, &log);
      break;
    }
  }
  bpf_object__close(obj);
  return e;
}

BpfError BpfTcAttach(const std::string& pinDir, const std::vector<std::string>& names, std::vector<std::string>* attached) {
  int progFds[2] = {-1, -1};
  auto closeProgs = [&progFds]() {
    for (int fd : progFds)
      if (fd >= 0) close(fd);
  };
  for (size_t i = 0; i < 2; i++) {
    std::string pin = TcProgPin(pinDir, kTcHooks[i].program);
    progFds[i] = bpf_obj_get(pin.c_str());
    if (progFds[i] < 0) {
      BpfError e = Fail(errno, "open pinned program " + pin);
      closeProgs();
      return e;
    }
  }
  BpfError openErr;
  int tcif = OpenTcif(pinDir, false, true, nullptr, &openErr);
  if (tcif < 0) {
    closeProgs();
    return openErr;
  }
  BpfError out;
  for (const std::string& name : names) {
    unsigned idx = if_nametoindex(name.c_str());
    if (idx == 0) continue;  // gone since it was listed
    DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(idx), .attach_point = BPF_TC_INGRESS);
    int err = bpf_tc_hook_create(&hook);
    bool own = err == 0;
    if (err && err != -EEXIST) {
      out = Fail(err, "create clsact qdisc on " + name);
      break;
    }
    uint32_t key = idx;
    TcifVal prev;
    TcifVal val;
    memset(&val, 0, sizeof(val));
    // An interface ferry already attached to keeps the record of who made its qdisc.
    if (bpf_map_lookup_elem(tcif, &key, &prev) == 0 && strncmp(prev.name, name.c_str(), sizeof(prev.name)) == 0) own = own || prev.ownQdisc;
    val.ownQdisc = own ? 1 : 0;
    strncpy(val.name, name.c_str(), sizeof(val.name) - 1);
    // Recorded before attaching, so a failure half way still leaves cleanup a way to it.
    if (bpf_map_update_elem(tcif, &key, &val, BPF_ANY) != 0) {
      out = Fail(errno, "record interface " + name + " in " + TcifPin(pinDir));
      break;
    }
    // Egress first: the replies of a connection ingress sends to a local endpoint must find
    // their translation already there.
    for (int i = 1; i >= 0 && !out.err; i--) {
      DECLARE_LIBBPF_OPTS(bpf_tc_hook, at, .ifindex = static_cast<int>(idx), .attach_point = kTcHooks[i].point);
      DECLARE_LIBBPF_OPTS(bpf_tc_opts, opts, .prog_fd = progFds[i], .flags = BPF_TC_F_REPLACE, .handle = kTcHandle, .priority = kTcPriority);
      err = bpf_tc_attach(&at, &opts);
      if (err) out = Fail(err, std::string("attach tc program to ") + kTcHooks[i].pointName + " of " + name);
    }
    if (out.err) break;
    attached->push_back(name);
  }
  close(tcif);
  closeProgs();
  return out;
}

BpfError BpfTcDetach(const std::string& pinDir, std::vector<std::string>* detached) {
  BpfError openErr;
  uint32_t valueSize = 0;
  int tcif = OpenTcif(pinDir, true, false, &valueSize, &openErr);
  if (tcif < 0) return openErr;
  std::vector<uint8_t> raw(valueSize);
  std::vector<uint32_t> keys;
  uint32_t key = 0, next = 0;
  const void* prev = nullptr;
  while (bpf_map_get_next_key(tcif, prev, &next) == 0) {
    keys.push_back(next);
    key = next;
    prev = &key;
  }
  BpfError out;
  for (uint32_t idx : keys) {
    if (bpf_map_lookup_elem(tcif, &idx, raw.data()) != 0) continue;
    TcifVal val;
    memcpy(&val, raw.data(), sizeof(val));
    char now[IF_NAMESIZE] = {0};
    std::string name(val.name, strnlen(val.name, sizeof(val.name)));
    // Only the interface ferry recorded: same index, same name (an index can be reused).
    if (if_indextoname(idx, now) && name == now) {
      bool found = false, failed = false;
      for (const TcHook& h : kTcHooks) {
        DECLARE_LIBBPF_OPTS(bpf_tc_hook, hook, .ifindex = static_cast<int>(idx), .attach_point = h.point);
        DECLARE_LIBBPF_OPTS(bpf_tc_opts, q, .handle = kTcHandle, .priority = kTcPriority);
        if (bpf_tc_query(&hook, &q) != 0 || !IsFerryProg(q.prog_id, h.program)) continue;
        found = true;
        DECLARE_LIBBPF_OPTS(bpf_tc_opts, d, .handle = kTcHandle, .priority = kTcPriority);
        int err = bpf_tc_detach(&hook, &d);
        if (err && err != -ENOENT) {
          out = Fail(err, std::string("detach tc program from ") + h.pointName + " of " + name);
          failed = true;
        }
      }
      if (failed) continue;
      if (found) {
        detached->push_back(name);
        // ferry made this clsact: remove it. Only where ferry's filter was found, so a cleanup
        // run in another network namespace (where the same index and name may be another
        // interface) never removes a qdisc that is not ferry's.
        if (val.ownQdisc) {
          DECLARE_LIBBPF_OPTS(bpf_tc_hook, both, .ifindex = static_cast<int>(idx), .attach_point = static_cast<bpf_tc_attach_point>(BPF_TC_INGRESS | BPF_TC_EGRESS));
          int e2 = bpf_tc_hook_destroy(&both);
          if (e2 && e2 != -ENOENT && e2 != -EINVAL) out = Fail(e2, "remove clsact qdisc from " + name);
        }
      }
    }
    bpf_map_delete_elem(tcif, &idx);
  }
  close(tcif);
  return out;
}

BpfError BpfProbe(const std::string& object) {
  std::lock_guard<std::mutex> guard(loadMu);
  LogCapture log;
  struct bpf_object* obj = bpf_object__open_file(object.c_str(), nullptr);
  if (!obj) return Fail(errno, "open BPF object " + object, &log);
  struct bpf_map* map;
  bpf_object__for_each_map(map, obj) {
    // Global data (.rodata) is one element of its own size: left as it is.
    if (bpf_map__is_internal(map)) continue;
    bpf_map__set_pin_path(map, nullptr);
    bpf_map__set_max_entries(map, 16);
  }
  int err = LoadQuietly(obj);
  BpfError e;
  if (err) e = Fail(err, "load BPF object " + object, &log);
  bpf_object__close(obj);
  return e;
}

namespace {

Napi::Error BpfErrorToJs(Napi::Env env, const BpfError& e);

[[noreturn]] void ThrowBpf(Napi::Env env, const BpfError& e) {
  throw BpfErrorToJs(env, e);
}

Napi::Array StringsToJs(Napi::Env env, const std::vector<std::string>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) a.Set(i, v[i]);
  return a;
}

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a string");
  return WithoutNul(info.Env(), info[i].As<Napi::String>().Utf8Value(), what);
}

uint32_t SizeArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  double d = info[i].As<Napi::Number>().DoubleValue();
  // Written so that NaN fails the range test before the cast (a NaN cast is undefined).
  if (!(d >= 1 && d <= 4096) || d != static_cast<uint32_t>(d)) throw Napi::RangeError::New(info.Env(), std::string(what) + " out of range");
  return static_cast<uint32_t>(d);
}

Napi::Uint8Array BytesArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsTypedArray() || info[i].As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
    throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a Uint8Array");
  }
  return info[i].As<Napi::Uint8Array>();
}

// ferry_ct's size in entries: undefined = as compiled (0); else a whole number in 2048..2^23.
uint32_t CtEntriesArg(Napi::Env env, Napi::Value v, const char* fn) {
  if (v.IsUndefined()) return 0;
  const std::string what = std::string(fn) + ": ctEntries must be a whole number from 2048 to 8388608";
  if (!v.IsNumber()) throw Napi::TypeError::New(env, what);
  double d = v.As<Napi::Number>().DoubleValue();
  if (!(d >= 2048 && d <= 8388608) || d != static_cast<uint32_t>(d)) throw Napi::RangeError::New(env, what);
  return static_cast<uint32_t>(d);
}

// The cookie of the network namespace this (the JS) thread is in — the process's: a socket's
// SO_NETNS_COOKIE (Linux 5.14+). 0 when the kernel has none to give.
uint64_t OwnNetnsCookie() {
#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) fd = socket(AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return 0;
  uint64_t cookie = 0;
  socklen_t len = sizeof(cookie);
  if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) != 0 || len != sizeof(cookie)) cookie = 0;
  close(fd);
  return cookie;
}

BpfLoadOptions LoadOptionsArg(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, std::string(fn) + ": the argument must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  BpfLoadOptions opts;
  for (auto [key, dst] : {std::pair<const char*, std::string*>{"object", &opts.object}, {"pinDir", &opts.pinDir}, {"cgroup", &opts.cgroup}}) {
    Napi::Value v = o.Get(key);
    if (!v.IsString()) throw Napi::TypeError::New(env, std::string(fn) + ": " + key + " must be a string");
    *dst = WithoutNul(env, v.As<Napi::String>().Utf8Value(), std::string(fn) + ": " + key);
  }
  opts.ctEntries = CtEntriesArg(env, o.Get("ctEntries"), fn);
  opts.hostNetns = OwnNetnsCookie();
  return opts;
}

Napi::Object LoadResultToJs(Napi::Env env, const BpfLoadResult& r) {
  Napi::Object out = Napi::Object::New(env);
  Napi::Array attached = Napi::Array::New(env, r.attached.size());
  for (size_t i = 0; i < r.attached.size(); i++) attached.Set(i, r.attached[i]);
  Napi::Array replaced = Napi::Array::New(env, r.replaced.size());
  for (size_t i = 0; i < r.replaced.size(); i++) replaced.Set(i, r.replaced[i]);
  out.Set("attached", attached);
  out.Set("replaced", replaced);
  out.Set("unpinned", StringsToJs(env, r.unpinned));
  return out;
}

// bpfLoadAsync({object, pinDir, cgroup, ctEntries?}) → Promise<{attached, replaced, unpinned: string[]}>, on
// the libuv thread pool: loading and verifying the programs is ~0.1 s of kernel time, which a
// daemon spends while its initial lists arrive.
Napi::Value BpfLoadAsync(const Napi::CallbackInfo& info) {
  BpfLoadOptions opts = LoadOptionsArg(info, "bpfLoadAsync");
  return PromiseWorker<BpfLoadResult>::Start(
      info.Env(), [opts]() { return BpfLoadAndAttach(opts); },
      [](Napi::Env env, Napi::Promise::Deferred& d, BpfLoadResult& r) {
        if (r.error.err) d.Reject(BpfErrorToJs(env, r.error).Value());
        else d.Resolve(LoadResultToJs(env, r));
      });
}

Napi::Value BpfProbeJs(const Napi::CallbackInfo& info) {
  BpfError e = BpfProbe(StringArg(info, 0, "bpfProbe: object"));
  if (e.err) ThrowBpf(info.Env(), e);
  return info.Env().Undefined();
}

// ---- map elements: engine (no JS values; also runs on the libuv thread pool) ----------------

// The bytes of one value as the syscalls read and write them: a per-CPU map's hold one
// 8-byte-aligned copy per possible CPU.
uint32_t SyscallValueSize(const struct bpf_map_info& info) {
  switch (info.type) {
    case BPF_MAP_TYPE_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_ARRAY:
    case BPF_MAP_TYPE_LRU_PERCPU_HASH:
    case BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE: {
      int cpus = libbpf_num_possible_cpus();
      return cpus > 0 ? ((info.value_size + 7) & ~7u) * static_cast<uint32_t>(cpus) : info.value_size;
    }
    default:
      return info.value_size;
  }
}

// A pinned map, opened for one call. The kernel reads and writes the map's own key and value
// sizes per element from the caller's buffers, whatever sizes the caller meant: sizes that are
// not the map's are refused here (vs 0: the call has no values).
struct PinnedMap {
  int fd = -1;
  uint32_t keySize = 0;
  BpfError error;
  PinnedMap(const std::string& path, const char* op, uint32_t ks, uint32_t vs) {
    fd = bpf_obj_get(path.c_str());
    if (fd < 0) {
      error = Fail(errno, "open pinned map " + path);
      return;
    }
    struct bpf_map_info info;
    memset(&info, 0, sizeof(info));
    uint32_t len = sizeof(info);
    if (bpf_obj_get_info_by_fd(fd, &info, &len) != 0) {
      error = Fail(errno, std::string("read the key and value sizes of pinned map ") + path + " (to " + op + ")");
      return;
    }
    keySize = info.key_size;
    uint32_t mapVs = SyscallValueSize(info);
    if (ks != info.key_size || (vs != 0 && vs != mapVs)) {
      error = Fail(EINVAL, std::string(op) + " in pinned map " + path + ": keySize " + std::to_string(ks) +
                               (vs != 0 ? ", valueSize " + std::to_string(vs) : std::string()) + " given, but its keys are " +
                               std::to_string(info.key_size) + " bytes" + (vs != 0 ? " and its values " + std::to_string(mapVs) : std::string()));
      error.badArgs = true;
    }
  }
  ~PinnedMap() {
    if (fd >= 0) close(fd);
  }
  PinnedMap(const PinnedMap&) = delete;
  PinnedMap& operator=(const PinnedMap&) = delete;
};

// Every element, in batches; fails on the first error with how many went in before it.
BpfError MapUpdate(const std::string& path, const uint8_t* keys, const uint8_t* values, uint32_t n, uint32_t ks, uint32_t vs) {
  PinnedMap m(path, "update", ks, vs);
  if (m.error.err) return m.error;
  uint32_t done = 0;
  const uint32_t chunk = 8192;
  while (done < n) {
    const uint32_t want = n - done < chunk ? n - done : chunk;
    uint32_t count = want;
    DECLARE_LIBBPF_OPTS(bpf_map_batch_opts, bo, .elem_flags = BPF_ANY, .flags = 0);
    int err = bpf_map_update_batch(m.fd, keys + static_cast<size_t>(done) * ks, values + static_cast<size_t>(done) * vs, &count, &bo);
    if (err) {
      int e = errno;
      if (e == EINVAL || e == ENOTSUPP || e == EOPNOTSUPP) {
        // No batch support for this map type (or one element the kernel refused): one by one
        // from the start of this batch, whatever `count` says; an upsert twice is harmless.
        for (uint32_t i = done; i < n; i++) {
          if (bpf_map_update_elem(m.fd, keys + static_cast<size_t>(i) * ks, values + static_cast<size_t>(i) * vs, BPF_ANY) != 0) {
            return Fail(errno, "update element " + std::to_string(i) + " of " + std::to_string(n) + " in " + path);
          }
        }
        return BpfError{};
      }
      // The kernel writes `count` back only once it has started on the elements; a refusal
      // before that (EPERM, EFAULT) leaves it as asked.
      uint32_t went = count < want ? count : 0;
      return Fail(e, "batch update in " + path + " after " + std::to_string(done + went) + " of " + std::to_string(n) + " elements");
    }
    done += count;
  }
  return BpfError{};
}

// Deletes each key; a key already absent is not an error.
BpfError MapDelete(const std::string& path, const uint8_t* keys, uint32_t n, uint32_t ks) {
  PinnedMap m(path, "delete", ks, 0);
  if (m.error.err) return m.error;
  uint32_t done = 0;
  while (done < n) {
    const uint32_t want = n - done;
    uint32_t count = want;
    DECLARE_LIBBPF_OPTS(bpf_map_batch_opts, bo, .elem_flags = 0, .flags = 0);
    if (bpf_map_delete_batch(m.fd, keys + static_cast<size_t>(done) * ks, &count, &bo) == 0) {
      done += count;
      continue;
    }
    int e = errno;
    // The kernel writes `count` back only once it has started on the keys: a map type without
    // batch deletes (ENOTSUPP) or a refusal before the first key leaves it as asked.
    uint32_t went = count < want ? count : 0;
    if (e != ENOENT && e != EINVAL && e != ENOTSUPP && e != EOPNOTSUPP) {
      return Fail(e, "batch delete in " + path + " after " + std::to_string(done + went) + " of " + std::to_string(n) + " elements");
    }
    // The next key is absent, or batches are unsupported: one by one from there (a key deleted
    // twice is only ENOENT).
    done += went;
    for (; done < n; done++) {
      if (bpf_map_delete_elem(m.fd, keys + static_cast<size_t>(done) * ks) != 0 && errno != ENOENT) {
        return Fail(errno, "delete element " + std::to_string(done) + " of " + std::to_string(n) + " in " + path);
      }
    }
  }
  return BpfError{};
}

struct MapDumpResult {
  BpfError error;
  std::vector<uint8_t> keys, values;
};

// Every element of a pinned map: in batches where its type has them, else element by element.
MapDumpResult MapDump(const std::string& path, uint32_t ks, uint32_t vs) {
  MapDumpResult r;
  PinnedMap m(path, "dump", ks, vs);
  if (m.error.err) {
    r.error = m.error;
    return r;
  }
  std::vector<uint8_t>& keys = r.keys;
  std::vector<uint8_t>& values = r.values;
  // Batched lookups: one syscall per few thousand elements instead of two per element (a full
  // sync's dump of 240,000 elements took ~2 s element by element). The batch token is where the
  // kernel stopped: a hash map's bucket index (4 bytes), other maps' (an LPM trie's) last key,
  // key_size bytes (generic_map_lookup_batch), which the kernel writes out and reads back.
  const uint32_t chunk = 8192;
  const size_t tokenSize = m.keySize > 8 ? m.keySize : 8;
  std::vector<uint8_t> token_in(tokenSize), token_out(tokenSize);
  bool first = true;
  for (;;) {
    size_t have = keys.size() / ks;
    keys.resize((have + chunk) * ks);
    values.resize((have + chunk) * vs);
    uint32_t count = chunk;
    DECLARE_LIBBPF_OPTS(bpf_map_batch_opts, bo, .elem_flags = 0, .flags = 0);
    int rc = bpf_map_lookup_batch(m.fd, first ? nullptr : token_in.data(), token_out.data(), keys.data() + have * ks,
                                  values.data() + have * vs, &count, &bo);
    int e = rc == 0 ? 0 : errno;
    if (rc == 0 || e == ENOENT) {
      // ENOENT: the last batch; the kernel wrote `count` either way.
      keys.resize((have + count) * ks);
      values.resize((have + count) * vs);
      if (rc != 0) return r;
      token_in = token_out;
      first = false;
      continue;
    }
    keys.resize(have * ks);
    values.resize(have * vs);
    // No batch lookups for this map type (or kernel): refused before the kernel counts anything,
    // so `count` is still what was asked, not what was read.
    if (first && (e == EINVAL || e == ENOTSUPP || e == EOPNOTSUPP)) break;
    r.error = Fail(e, "batch lookup in " + path + " after " + std::to_string(have) + " elements");
    return r;
  }
  keys.clear();
  values.clear();
  std::vector<uint8_t> key(ks), next(ks), value(vs);
  // get_next_key from NULL: portable across map types and kernels.
  const void* prev = nullptr;
  int rc;
  while ((rc = bpf_map_get_next_key(m.fd, prev, next.data())) == 0) {
    if (bpf_map_lookup_elem(m.fd, next.data(), value.data()) == 0) {
      keys.insert(keys.end(), next.begin(), next.end());
      values.insert(values.end(), value.begin(), value.end());
    }
    key = next;
    prev = key.data();
  }
  if (errno != ENOENT) r.error = Fail(errno, "dump " + path);
  return r;
}

// ---- map elements: JS surface ---------------------------------------------------------------

Napi::Error BpfErrorToJs(Napi::Env env, const BpfError& e) {
  std::string msg = e.badArgs ? e.where : e.where + ": " + std::strerror(e.err);
  if (!e.detail.empty()) msg += "\n" + e.detail;
  Napi::Error err = e.badArgs ? Napi::RangeError::New(env, msg) : Napi::Error::New(env, msg);
  err.Set("code", Napi::String::New(env, "FERRY_ERR_BPF"));
  err.Set("errno", Napi::Number::New(env, e.err));
  err.Set("step", Napi::String::New(env, e.where));
  return err;
}

// The caller's bytes, not a copy (a full sync's are tens of MB): the reference keeps them alive
// until the promise settles (released on the JS thread, where the worker dies). The compiler
// never writes to a diff's buffers once made.
struct HeldElements {
  Napi::Reference<Napi::Uint8Array> keysRef, valuesRef;
  const uint8_t* keys = nullptr;
  const uint8_t* values = nullptr;
  uint32_t n = 0;
};

struct MapUpdateArgs {
  std::string path;
  Napi::Uint8Array keys, values;
  uint32_t ks = 0, vs = 0, n = 0;
};

MapUpdateArgs UpdateArgs(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  std::string f(fn);
  MapUpdateArgs a;
  a.path = StringArg(info, 0, (f + ": path").c_str());
  a.keys = BytesArg(info, 1, (f + ": keys").c_str());
  a.values = BytesArg(info, 2, (f + ": values").c_str());
  a.ks = SizeArg(info, 3, (f + ": keySize").c_str());
  a.vs = SizeArg(info, 4, (f + ": valueSize").c_str());
  if (a.keys.ByteLength() % a.ks != 0 || a.values.ByteLength() % a.vs != 0 || a.keys.ByteLength() / a.ks != a.values.ByteLength() / a.vs) {
    throw Napi::RangeError::New(env, f + ": keys and values do not hold the same number of whole elements");
  }
  a.n = static_cast<uint32_t>(a.keys.ByteLength() / a.ks);
  return a;
}

// bpfMapUpdate(path, keys, values, keySize, valueSize) → count: every element, in batches;
// throws on the first failure with how many went in before it.
Napi::Value BpfMapUpdate(const Napi::CallbackInfo& info) {
  MapUpdateArgs a = UpdateArgs(info, "bpfMapUpdate");
  BpfError e = MapUpdate(a.path, a.keys.Data(), a.values.Data(), a.n, a.ks, a.vs);
  if (e.err) ThrowBpf(info.Env(), e);
  return Napi::Number::New(info.Env(), a.n);
}

// bpfMapUpdateAsync(...) → Promise<count>: the same on the libuv thread pool, so writes to
// several maps run at once and the event loop is not held while the kernel works.
Napi::Value BpfMapUpdateAsync(const Napi::CallbackInfo& info) {
  MapUpdateArgs a = UpdateArgs(info, "bpfMapUpdateAsync");
  auto held = std::make_shared<HeldElements>(HeldElements{Napi::Persistent(a.keys), Napi::Persistent(a.values), a.keys.Data(), a.values.Data(), a.n});
  std::string path = a.path;
  uint32_t ks = a.ks, vs = a.vs;
  return PromiseWorker<BpfError>::Start(
      info.Env(), [held, path, ks, vs]() { return MapUpdate(path, held->keys, held->values, held->n, ks, vs); },
      [held](Napi::Env env, Napi::Promise::Deferred& d, BpfError& e) {
        if (e.err) d.Reject(BpfErrorToJs(env, e).Value());
        else d.Resolve(Napi::Number::New(env, held->n));
      });
}

struct MapDeleteArgs {
  std::string path;
  Napi::Uint8Array keys;
  uint32_t ks = 0, n = 0;
};

MapDeleteArgs DeleteArgs(const Napi::CallbackInfo& info, const char* fn) {
  std::string f(fn);
  MapDeleteArgs a;
  a.path = StringArg(info, 0, (f + ": path").c_str());
  a.keys = BytesArg(info, 1, (f + ": keys").c_str());
  a.ks = SizeArg(info, 2, (f + ": keySize").c_str());
  if (a.keys.ByteLength() % a.ks != 0) throw Napi::RangeError::New(info.Env(), f + ": keys do not hold whole elements");
  a.n = static_cast<uint32_t>(a.keys.ByteLength() / a.ks);
  return a;
}

// bpfMapDelete(path, keys, keySize) → count: deletes each key; a key already absent is not an error.
Napi::Value BpfMapDelete(const Napi::CallbackInfo& info) {
  MapDeleteArgs a = DeleteArgs(info, "bpfMapDelete");
  BpfError e = MapDelete(a.path, a.keys.Data(), a.n, a.ks);
  if (e.err) ThrowBpf(info.Env(), e);
  return Napi::Number::New(info.Env(), a.n);
}

Napi::Value BpfMapDeleteAsync(const Napi::CallbackInfo& info) {
  MapDeleteArgs a = DeleteArgs(info, "bpfMapDeleteAsync");
  auto held = std::make_shared<HeldElements>();
  held->keysRef = Napi::Persistent(a.keys);
  held->keys = a.keys.Data();
  held->n = a.n;
  std::string path = a.path;
  uint32_t ks = a.ks;
  return PromiseWorker<BpfError>::Start(
      info.Env(), [held, path, ks]() { return MapDelete(path, held->keys, held->n, ks); },
      [held](Napi::Env env, Napi::Promise::Deferred& d, BpfError& e) {
        if (e.err) d.Reject(BpfErrorToJs(env, e).Value());
        else d.Resolve(Napi::Number::New(env, held->n));
      });
}

Napi::Object DumpToJs(Napi::Env env, MapDumpResult& r, uint32_t ks) {
  Napi::Object out = Napi::Object::New(env);
  out.Set("keys", Napi::Buffer<uint8_t>::Copy(env, r.keys.data(), r.keys.size()));
  out.Set("values", Napi::Buffer<uint8_t>::Copy(env, r.values.data(), r.values.size()));
  out.Set("count", Napi::Number::New(env, static_cast<double>(r.keys.size() / ks)));
  return out;
}

// bpfMapDump(path, keySize, valueSize) → {keys, values, count}: every element of a hash map.
Napi::Value BpfMapDump(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "bpfMapDump: path");
  uint32_t ks = SizeArg(info, 1, "bpfMapDump: keySize");
  uint32_t vs = SizeArg(info, 2, "bpfMapDump: valueSize");
  MapDumpResult r = MapDump(path, ks, vs);
  if (r.error.err) ThrowBpf(info.Env(), r.error);
  return DumpToJs(info.Env(), r, ks);
}

Napi::Value BpfMapDumpAsync(const Napi::CallbackInfo& info) {
  std::string path = StringArg(info, 0, "bpfMapDumpAsync: path");
  uint32_t ks = SizeArg(info, 1, "bpfMapDumpAsync: keySize");
  uint32_t vs = SizeArg(info, 2, "bpfMapDumpAsync: valueSize");
  return PromiseWorker<MapDumpResult>::Start(
      info.Env(), [path, ks, vs]() { return MapDump(path, ks, vs); },
      [ks](Napi::Env env, Napi::Promise::Deferred& d, MapDumpResult& r) {
        if (r.error.err) d.Reject(BpfErrorToJs(env, r.error).Value());
        else d.Resolve(DumpToJs(env, r, ks));
      });
}

struct TcLoadArgs {
  std::string object, pinDir;
  BpfSnatPorts ports;
  bool withPorts = false;
  uint32_t ctEntries = 0;
  BpfCtTimeouts timeouts;
  bool withTimeouts = false;
};

TcLoadArgs TcLoadArgsOf(const Napi::CallbackInfo& info, const char* fn) {
  TcLoadArgs a;
  BpfSnatPorts& ports = a.ports;
  bool withPorts = a.withPorts = info.Length() > 2 && !info[2].IsUndefined();
  if (withPorts) {
    const std::string what = std::string(fn) + ": snatPorts must be [loMin, loCount, hiMin, hiCount], each range inside 1-65535";
    if (!info[2].IsArray() || info[2].As<Napi::Array>().Length() != 4) throw Napi::TypeError::New(info.Env(), what);
    Napi::Array a = info[2].As<Napi::Array>();
    double v[4];
    for (uint32_t i = 0; i < 4; i++) {
      Napi::Value x = a.Get(i);
      if (!x.IsNumber()) throw Napi::TypeError::New(info.Env(), what);
      v[i] = x.As<Napi::Number>().DoubleValue();
      if (!(v[i] >= 0 && v[i] <= 65535) || v[i] != static_cast<uint16_t>(v[i])) throw Napi::RangeError::New(info.Env(), what);
    }
    for (int r = 0; r < 4; r += 2)
      if (v[r + 1] > 0 && (v[r] < 1 || v[r] + v[r + 1] > 65536)) throw Napi::RangeError::New(info.Env(), what);
    ports = {static_cast<uint16_t>(v[0]), static_cast<uint16_t>(v[1]), static_cast<uint16_t>(v[2]), static_cast<uint16_t>(v[3])};
  }
  a.object = StringArg(info, 0, (std::string(fn) + ": object").c_str());
  a.pinDir = StringArg(info, 1, (std::string(fn) + ": pinDir").c_str());
  a.ctEntries = CtEntriesArg(info.Env(), info.Length() > 3 ? info[3] : info.Env().Undefined(), fn);
  a.withTimeouts = info.Length() > 4 && !info[4].IsUndefined();
  if (a.withTimeouts) {
    const std::string what = std::string(fn) + ": ctTimeouts must be [established, closeWait, udp, udpStream], each 1-4294967295 seconds";
    if (!info[4].IsArray() || info[4].As<Napi::Array>().Length() != 4) throw Napi::TypeError::New(info.Env(), what);
    Napi::Array arr = info[4].As<Napi::Array>();
    uint32_t v[4];
    for (uint32_t i = 0; i < 4; i++) {
      Napi::Value x = arr.Get(i);
      if (!x.IsNumber()) throw Napi::TypeError::New(info.Env(), what);
      double d = x.As<Napi::Number>().DoubleValue();
      if (!(d >= 1 && d <= 4294967295.0) || d != static_cast<double>(static_cast<uint32_t>(d))) throw Napi::RangeError::New(info.Env(), what);
      v[i] = static_cast<uint32_t>(d);
    }
    a.timeouts = {v[0], v[1], v[2], v[3]};
  }
  return a;
}

struct TcLoadResult {
  BpfError error;
  std::vector<std::string> unpinned;
};

// bpfTcLoadAsync(object, pinDir, snatPorts?, ctEntries?, ctTimeouts?) → Promise<string[]> (the
// maps it unpinned for another layout): loads the tc object (maps by pin name) and pins its
// program, on the thread pool; snatPorts = [loMin, loCount, hiMin, hiCount], each range inside
// 1-65535; ctEntries = ferry_ct's size (as bpfLoadAsync's, or each replaces the other's pin);
// ctTimeouts = [established, closeWait, udp, udpStream] in seconds.
Napi::Value BpfTcLoadAsync(const Napi::CallbackInfo& info) {
  TcLoadArgs a = TcLoadArgsOf(info, "bpfTcLoadAsync");
  return PromiseWorker<TcLoadResult>::Start(
      info.Env(),
      [a]() {
        TcLoadResult r;
        r.error = BpfTcLoad(a.object, a.pinDir, a.withPorts ? &a.ports : nullptr, a.withTimeouts ? &a.timeouts : nullptr, a.ctEntries, &r.unpinned);
        return r;
      },
      [](Napi::Env env, Napi::Promise::Deferred& d, TcLoadResult& r) {
        if (r.error.err) d.Reject(BpfErrorToJs(env, r.error).Value());
        else d.Resolve(StringsToJs(env, r.unpinned));
      });
}

std::vector<std::string> StringsArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  if (info.Length() <= i || !info[i].IsArray()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an array of strings");
  Napi::Array a = info[i].As<Napi::Array>();
  std::vector<std::string> out;
  for (uint32_t k = 0; k < a.Length(); k++) {
    Napi::Value v = a.Get(k);
    if (!v.IsString()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an array of strings");
    out.push_back(WithoutNul(info.Env(), v.As<Napi::String>().Utf8Value(), what));
  }
  return out;
}

Napi::Array StringsOut(Napi::Env env, const std::vector<std::string>& v) {
  Napi::Array a = Napi::Array::New(env, v.size());
  for (size_t i = 0; i < v.size(); i++) a.Set(i, v[i]);
  return a;
}

// bpfUdpSocketsAsync(object, pinDir, netns, termKeys?, keySize?) → Promise<{records, gone}>:
// BpfUdpSockets on the thread pool. Without termKeys it lists; with them it destroys.
Napi::Value BpfUdpSocketsAsync(const Napi::CallbackInfo& info) {
  const char* fn = "bpfUdpSocketsAsync";
  auto opts = std::make_shared<BpfUdpSocketsOptions>();
  opts->object = StringArg(info, 0, "bpfUdpSocketsAsync: object");
  opts->pinDir = StringArg(info, 1, "bpfUdpSocketsAsync: pinDir");
  opts->netns = StringsArg(info, 2, "bpfUdpSocketsAsync: netns");
  auto keys = std::make_shared<std::string>();
  if (info.Length() > 3 && !info[3].IsUndefined() && !info[3].IsNull()) {
    Napi::Uint8Array k = BytesArg(info, 3, "bpfUdpSocketsAsync: termKeys");
    uint32_t ks = SizeArg(info, 4, "bpfUdpSocketsAsync: keySize");
    if (ks == 0 || k.ByteLength() % ks != 0 || k.ByteLength() / ks == 0 || k.ByteLength() / ks > 1u << 20)
      throw Napi::RangeError::New(info.Env(), std::string(fn) + ": termKeys must hold 1 to 1048576 keys of keySize bytes");
    keys->assign(reinterpret_cast<const char*>(k.Data()), k.ByteLength());
    opts->keySize = ks;
    opts->termCount = static_cast<uint32_t>(k.ByteLength() / ks);
  }
  return PromiseWorker<BpfUdpSocketsResult>::Start(
      info.Env(),
      [opts, keys]() {
        BpfUdpSocketsOptions o = *opts;
        if (o.termCount > 0) o.termKeys = reinterpret_cast<const uint8_t*>(keys->data());
        return BpfUdpSockets(o);
      },
      [](Napi::Env env, Napi::Promise::Deferred& d, BpfUdpSocketsResult& r) {
        if (r.error.err) {
          d.Reject(BpfErrorToJs(env, r.error).Value());
          return;
        }
        Napi::Object out = Napi::Object::New(env);
        out.Set("records", Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(r.records.data()), r.records.size()));
        out.Set("gone", StringsToJs(env, r.gone));
        d.Resolve(out);
      });
}

// bpfTcAttach(pinDir, names) → names attached (or whose program was replaced).
Napi::Value BpfTcAttachJs(const Napi::CallbackInfo& info) {
  std::string pinDir = StringArg(info, 0, "bpfTcAttach: pinDir");
  std::vector<std::string> names = StringsArg(info, 1, "bpfTcAttach: names");
  std::vector<std::string> attached;
  BpfError e = BpfTcAttach(pinDir, names, &attached);
  if (e.err) ThrowBpf(info.Env(), e);
  return StringsOut(info.Env(), attached);
}

// bpfTcDetach(pinDir) → names detached: every interface recorded in the pinned ferry_tcif.
Napi::Value BpfTcDetachJs(const Napi::CallbackInfo& info) {
  std::vector<std::string> detached;
  BpfError e = BpfTcDetach(StringArg(info, 0, "bpfTcDetach: pinDir"), &detached);
  if (e.err) ThrowBpf(info.Env(), e);
  return StringsOut(info.Env(), detached);
}

// bpfInterfaces() → the interfaces of this process's network namespace (netlink, not /sys).
Napi::Value BpfInterfacesJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  struct if_nameindex* list = if_nameindex();
  if (!list) ThrowBpf(env, Fail(errno, "list network interfaces"));
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (struct if_nameindex* p = list; p->if_index != 0 && p->if_name; p++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", p->if_name);
    o.Set("index", Napi::Number::New(env, p->if_index));
    out.Set(n++, o);
  }
  if_freenameindex(list);
  return out;
}

}  // namespace

void RegisterBpf(Napi::Env env, Napi::Object exports) {
  exports.Set("bpfLoadAsync", Napi::Function::New(env, BpfLoadAsync, "bpfLoadAsync"));
  exports.Set("bpfProbe", Napi::Function::New(env, BpfProbeJs, "bpfProbe"));
  exports.Set("bpfMapUpdate", Napi::Function::New(env, BpfMapUpdate, "bpfMapUpdate"));
  exports.Set("bpfMapDelete", Napi::Function::New(env, BpfMapDelete, "bpfMapDelete"));
  exports.Set("bpfMapDump", Napi::Function::New(env, BpfMapDump, "bpfMapDump"));
  exports.Set("bpfMapUpdateAsync", Napi::Function::New(env, BpfMapUpdateAsync, "bpfMapUpdateAsync"));
  exports.Set("bpfMapDeleteAsync", Napi::Function::New(env, BpfMapDeleteAsync, "bpfMapDeleteAsync"));
  exports.Set("bpfMapDumpAsync", Napi::Function::New(env, BpfMapDumpAsync, "bpfMapDumpAsync"));
  exports.Set("bpfTcLoadAsync", Napi::Function::New(env, BpfTcLoadAsync, "bpfTcLoadAsync"));
  exports.Set("bpfTcAttach", Napi::Function::New(env, BpfTcAttachJs, "bpfTcAttach"));
  exports.Set("bpfTcDetach", Napi::Function::New(env, BpfTcDetachJs, "bpfTcDetach"));
  exports.Set("bpfInterfaces", Napi::Function::New(env, BpfInterfacesJs, "bpfInterfaces"));
  exports.Set("bpfUdpSocketsAsync", Napi::Function::New(env, BpfUdpSocketsAsync, "bpfUdpSocketsAsync"));
}

}  // namespace ferry

// libnftables wrapper. Creating an nft context loads and parses a lot of state, so ferry keeps
// one for the life of the process; contexts are not thread-safe, so every use holds g_mu.
// The context is never freed: it lives as long as the process (and is shared by all Node
// environments that load the addon, which is why it is not tied to one env's cleanup hook).
//
// Scripts are handed to libnftables as a file (an in-memory memfd opened by path), not with
// nft_run_cmd_from_buffer: libnftables 1.0.6 reports errors in a buffer without a line number
// and quotes the wrong line, while errors in a file come as "FILE:LINE:COL-COL: Error: ..."
// with the right line quoted. Callers need that line to say which rule failed.
#include "nft.h"

#include <nftables/libnftables.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>

namespace ferry {
namespace {

std::mutex g_mu;
struct nft_ctx* g_ctx = nullptr;  // guarded by g_mu

// Caller holds g_mu.
struct nft_ctx* Context(std::string* err) {
  if (g_ctx != nullptr) return g_ctx;
  struct nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (ctx == nullptr) {
    *err = "nft_ctx_new failed";
    return nullptr;
  }
  if (nft_ctx_buffer_output(ctx) != 0 || nft_ctx_buffer_error(ctx) != 0) {
    nft_ctx_free(ctx);
    *err = "nft_ctx_buffer_output/nft_ctx_buffer_error failed";
    return nullptr;
  }
  g_ctx = ctx;
  return g_ctx;
}

// Writes text into a fresh memfd. Returns the fd, or -1 (then the caller uses the buffer API).
int ScriptFile(const std::string& text) {
  int fd = memfd_create("ferry-nft", MFD_CLOEXEC);
  if (fd < 0) return -1;
  const char* p = text.data();
  size_t left = text.size();
  while (left > 0) {
    ssize_t n = write(fd, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      close(fd);
      return -1;
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
  return fd;
}

}  // namespace

NftResult NftRun(const std::string& text, const NftOptions& opts) {
  NftResult res;
  std::lock_guard<std::mutex> lock(g_mu);
  struct nft_ctx* ctx = Context(&res.error);
  if (ctx == nullptr) return res;

  unsigned int flags = 0;
  if (opts.json) flags |= NFT_CTX_OUTPUT_JSON;
  if (opts.handles) flags |= NFT_CTX_OUTPUT_HANDLE;
  if (opts.terse) flags |= NFT_CTX_OUTPUT_TERSE;
  nft_ctx_output_set_flags(ctx, flags);
  nft_ctx_set_dry_run(ctx, opts.dryRun);

  int rc;
  int fd = ScriptFile(text);
  if (fd >= 0) {
    // Opening /proc/self/fd/N re-opens the memfd at offset 0, so libnftables may read it twice
    // (it tries JSON first when JSON output is on).
    std::string path = "/proc/self/fd/" + std::to_string(fd);
    rc = nft_run_cmd_from_filename(ctx, path.c_str());
    close(fd);
  } else {
    rc = nft_run_cmd_from_buffer(ctx, text.c_str());
  }
  // Reading a buffer also rewinds it, so both are always read: the next call starts empty.
  const char* out = nft_ctx_get_output_buffer(ctx);
  const char* err = nft_ctx_get_error_buffer(ctx);
  res.output = out != nullptr ? out : "";
  res.error = err != nullptr ? err : "";
  res.ok = rc == 0;
  if (!res.ok && res.error.empty()) res.error = "nft: command failed without an error message";
  return res;
}

}  // namespace ferry

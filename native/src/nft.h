// libnftables, in-process. One context per process, used by one caller at a time.
// Must never be called with a JS value: it runs on the thread pool as well as on the JS thread.
#pragma once

#include <string>

namespace ferry {

struct NftOptions {
  bool json = false;     // NFT_CTX_OUTPUT_JSON: listings come back as JSON
  bool handles = false;  // NFT_CTX_OUTPUT_HANDLE: listings include rule handles
  bool terse = false;    // NFT_CTX_OUTPUT_TERSE: listings omit set elements
  bool dryRun = false;   // parse, evaluate and send as a check only (`nft -c`)
};

struct NftResult {
  bool ok = false;
  std::string output;
  std::string error;
};

// Runs a whole buffer of nft commands as one transaction (libnftables sends one netlink batch:
// all of it applies or none of it does). Thread-safe: calls are serialized by a mutex.
NftResult NftRun(const std::string& text, const NftOptions& opts);

}  // namespace ferry

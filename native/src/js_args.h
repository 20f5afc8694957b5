// Checks shared by the JS surfaces (addon.cc, bpf.cc) for arguments that end up in C APIs.
#pragma once

#include <napi.h>

#include <string>

namespace ferry {

// `s`, unless it holds a NUL: a C API would read only the part before it (another path, another
// name, a shorter script) and act on that.
inline std::string WithoutNul(Napi::Env env, std::string s, const std::string& what) {
  if (s.find('\0') != std::string::npos) throw Napi::TypeError::New(env, what + " contains a NUL character");
  return s;
}

}  // namespace ferry

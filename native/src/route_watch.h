// routeWatch: address and link changes of this network namespace, pushed to JS (route_watch.cc).
#pragma once

#include <napi.h>

namespace ferry {

void RegisterRouteWatch(Napi::Env env, Napi::Object exports);

}  // namespace ferry

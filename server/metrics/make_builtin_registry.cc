// SPDX-License-Identifier: Apache-2.0
// The registry of builds without prometheus-cpp.
#include "server/metrics/builtin_registry.h"

namespace aaren {

std::unique_ptr<MetricsRegistry> MakeMetricsRegistry() {
  return std::make_unique<BuiltinRegistry>();
}

}  // namespace aaren

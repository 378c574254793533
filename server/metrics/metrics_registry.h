// SPDX-License-Identifier: Apache-2.0
// MetricsRegistry: the one small interface the server's metrics go through, with two
// implementations: prometheus-cpp (when CMake finds it; the Docker image builds it) and a
// built-in Prometheus text-format exporter served by civetweb (builtin_registry.h). Metric
// families are declared once, then series are addressed by family name and label values.
//
// Thread-safety: every method may be called from any thread.
#ifndef AAREN_SERVER_METRICS_METRICS_REGISTRY_H_
#define AAREN_SERVER_METRICS_METRICS_REGISTRY_H_

#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/statusor.h"

namespace aaren {

// Label name/value pairs of one series, in the family's label order.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

class MetricsRegistry {
 public:
  virtual ~MetricsRegistry() = default;

  // Declares a family; call before its first use. Histogram bounds are the upper bounds of the
  // finite buckets, ascending.
  virtual void AddCounter(const std::string& name, const std::string& help) = 0;
  virtual void AddGauge(const std::string& name, const std::string& help) = 0;
  virtual void AddHistogram(const std::string& name, const std::string& help,
                            std::vector<double> bounds) = 0;

  // Counter += value (value >= 0); gauge = value; histogram observation. The series is created
  // on first use. Unknown family names are ignored.
  virtual void Increment(const std::string& name, const MetricLabels& labels, double value) = 0;
  virtual void Set(const std::string& name, const MetricLabels& labels, double value) = 0;
  virtual void Observe(const std::string& name, const MetricLabels& labels, double value) = 0;

  // Serves GET /metrics on host:port (port 0: any free port) until destruction; returns the
  // port. `collect` runs before every scrape, without any registry lock held (it may Set()).
  virtual absl::StatusOr<int> Serve(const std::string& host, int port,
                                    std::function<void()> collect) = 0;

  // "prometheus-cpp" or "builtin".
  virtual const char* implementation() const = 0;
};

// The registry this build uses: prometheus-cpp when it was found at configure time, else the
// built-in exporter.
std::unique_ptr<MetricsRegistry> MakeMetricsRegistry();

}  // namespace aaren

#endif  // AAREN_SERVER_METRICS_METRICS_REGISTRY_H_

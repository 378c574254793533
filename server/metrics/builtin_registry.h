// SPDX-License-Identifier: Apache-2.0
// BuiltinRegistry: MetricsRegistry without third-party metrics code. Keeps every series in
// memory under one mutex, renders the Prometheus text exposition format (version 0.0.4) and
// serves it over HTTP with civetweb (Debian's libcivetweb-dev).
#ifndef AAREN_SERVER_METRICS_BUILTIN_REGISTRY_H_
#define AAREN_SERVER_METRICS_BUILTIN_REGISTRY_H_

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "server/metrics/metrics_registry.h"

struct mg_context;
struct mg_connection;

namespace aaren {

class BuiltinRegistry final : public MetricsRegistry {
 public:
  BuiltinRegistry() = default;
  ~BuiltinRegistry() override;

  void AddCounter(const std::string& name, const std::string& help) override;
  void AddGauge(const std::string& name, const std::string& help) override;
  void AddHistogram(const std::string& name, const std::string& help,
                    std::vector<double> bounds) override;
  void Increment(const std::string& name, const MetricLabels& labels, double value) override;
  void Set(const std::string& name, const MetricLabels& labels, double value) override;
  void Observe(const std::string& name, const MetricLabels& labels, double value) override;
  absl::StatusOr<int> Serve(const std::string& host, int port,
                            std::function<void()> collect) override;
  const char* implementation() const override { return "builtin"; }

  // The exposition text of every family, in declaration order.
  std::string Render() const;

 private:
  enum class Type { kCounter, kGauge, kHistogram };
  struct Series {
    double value = 0.0;                   // counter, gauge
    std::vector<uint64_t> bucket_counts;  // histogram: per finite bucket (not cumulative)
    uint64_t count = 0;
    double sum = 0.0;
  };
  struct Family {
    Type type;
    std::string help;
    std::vector<double> bounds;
    std::map<std::string, Series> series;  // key: rendered labels, e.g. {rpc="Append"}
  };
  void Add(const std::string& name, Type type, const std::string& help, std::vector<double> bounds);
  Series* FindSeries(const std::string& name, const MetricLabels& labels, Type type);
  static int HandleMetrics(mg_connection* conn, void* self);

  mutable std::mutex mu_;
  std::vector<std::string> order_;
  std::map<std::string, Family> families_;
  std::function<void()> collect_;
  mg_context* http_ = nullptr;
};

}  // namespace aaren

#endif  // AAREN_SERVER_METRICS_BUILTIN_REGISTRY_H_

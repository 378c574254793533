// SPDX-License-Identifier: Apache-2.0
// MetricsRegistry over prometheus-cpp (core + pull), built when CMake finds prometheus-cpp (the
// Docker image builds it from its pinned release; Debian 12 does not package it).
#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <map>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "server/metrics/metrics_registry.h"

namespace aaren {
namespace {

prometheus::Labels ToLabels(const MetricLabels& labels) {
  return prometheus::Labels(labels.begin(), labels.end());
}

// Runs the collect hook, then hands out the registry's families.
class CollectingRegistry : public prometheus::Collectable {
 public:
  CollectingRegistry(std::shared_ptr<prometheus::Registry> registry, std::function<void()> collect)
      : registry_(std::move(registry)), collect_(std::move(collect)) {}
  std::vector<prometheus::MetricFamily> Collect() const override {
    if (collect_) collect_();
    return registry_->Collect();
  }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::function<void()> collect_;
};

class PrometheusCppRegistry final : public MetricsRegistry {
 public:
  void AddCounter(const std::string& name, const std::string& help) override {
    std::lock_guard<std::mutex> lock(mu_);
    counters_.emplace(name, &prometheus::BuildCounter().Name(name).Help(help).Register(*registry_));
  }
  void AddGauge(const std::string& name, const std::string& help) override {
    std::lock_guard<std::mutex> lock(mu_);
    gauges_.emplace(name, &prometheus::BuildGauge().Name(name).Help(help).Register(*registry_));
  }
  void AddHistogram(const std::string& name, const std::string& help,
                    std::vector<double> bounds) override {
    std::lock_guard<std::mutex> lock(mu_);
    histograms_.emplace(
        name,
        HistogramFamily{&prometheus::BuildHistogram().Name(name).Help(help).Register(*registry_),
                        std::move(bounds)});
  }
  void Increment(const std::string& name, const MetricLabels& labels, double value) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = counters_.find(name);
    if (it != counters_.end()) it->second->Add(ToLabels(labels)).Increment(value);
  }
  void Set(const std::string& name, const MetricLabels& labels, double value) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = gauges_.find(name);
    if (it != gauges_.end()) it->second->Add(ToLabels(labels)).Set(value);
  }
  void Observe(const std::string& name, const MetricLabels& labels, double value) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = histograms_.find(name);
    if (it == histograms_.end()) return;
    it->second.family->Add(ToLabels(labels), it->second.bounds).Observe(value);
  }
  absl::StatusOr<int> Serve(const std::string& host, int port,
                            std::function<void()> collect) override {
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(absl::StrCat(host, ":", port));
    } catch (const std::exception& e) {
      return absl::UnavailableError(absl::StrCat("--metrics_port: cannot listen on ", host, ":",
                                                 port, " for /metrics: ", e.what()));
    }
    collectable_ = std::make_shared<CollectingRegistry>(registry_, std::move(collect));
    exposer_->RegisterCollectable(collectable_);
    const std::vector<int> ports = exposer_->GetListeningPorts();
    if (ports.empty()) return absl::InternalError("metrics: no listening port");
    return ports.front();
  }
  const char* implementation() const override { return "prometheus-cpp"; }

 private:
  struct HistogramFamily {
    prometheus::Family<prometheus::Histogram>* family;
    prometheus::Histogram::BucketBoundaries bounds;
  };
  std::mutex mu_;
  std::shared_ptr<prometheus::Registry> registry_ = std::make_shared<prometheus::Registry>();
  std::map<std::string, prometheus::Family<prometheus::Counter>*> counters_;
  std::map<std::string, prometheus::Family<prometheus::Gauge>*> gauges_;
  std::map<std::string, HistogramFamily> histograms_;
  std::shared_ptr<CollectingRegistry> collectable_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

}  // namespace

std::unique_ptr<MetricsRegistry> MakeMetricsRegistry() {
  return std::make_unique<PrometheusCppRegistry>();
}

}  // namespace aaren

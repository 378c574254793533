// SPDX-License-Identifier: Apache-2.0
#include "client/cli/bench_report.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/cli/cli_common.h"

namespace aaren::cli {
namespace {

double Rate(int64_t n, double seconds) { return seconds > 0 ? n / seconds : 0; }

// The sample of rank ceil(q * n) (1-based) of sorted samples, in µs.
double Percentile(const std::vector<int64_t>& sorted, double q) {
  const size_t rank = static_cast<size_t>(std::ceil(q * sorted.size()));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1] / 1e3;
}

}  // namespace

LatencySummary SummarizeLatencies(std::vector<int64_t>& samples_ns) {
  LatencySummary s;
  if (samples_ns.empty()) return s;
  std::sort(samples_ns.begin(), samples_ns.end());
  double sum = 0;
  for (int64_t v : samples_ns) sum += v;
  s.count = static_cast<int64_t>(samples_ns.size());
  s.mean_us = sum / samples_ns.size() / 1e3;
  s.p50_us = Percentile(samples_ns, 0.50);
  s.p90_us = Percentile(samples_ns, 0.90);
  s.p99_us = Percentile(samples_ns, 0.99);
  s.max_us = samples_ns.back() / 1e3;
  return s;
}

std::string FormatBenchTable(const BenchReport& r) {
  auto f1 = [](double v) { return absl::StrFormat("%.1f", v); };
  return FormatTable(
      {{"MODE", "MODEL", "CONCURRENCY", "CALLS", "TOKENS", "SECONDS", "CALLS/S", "TOKENS/S",
        "P50_US", "P90_US", "P99_US", "MAX_US", "ERRORS"},
       {r.mode, r.model, absl::StrCat(r.concurrency), absl::StrCat(r.calls), absl::StrCat(r.tokens),
        absl::StrFormat("%.3f", r.seconds), f1(Rate(r.calls, r.seconds)),
        f1(Rate(r.tokens, r.seconds)), f1(r.latency.p50_us), f1(r.latency.p90_us),
        f1(r.latency.p99_us), f1(r.latency.max_us), absl::StrCat(r.errors)}});
}

std::string FormatBenchJson(const BenchReport& r) {
  // ordered_json: keys in the order written here, not sorted.
  const nlohmann::ordered_json doc = {
      {"mode", r.mode},
      {"target", r.target},
      {"model", r.model},
      {"concurrency", r.concurrency},
      {"calls", r.calls},
      {"tokens", r.tokens},
      {"seconds", r.seconds},
      {"calls_per_s", Rate(r.calls, r.seconds)},
      {"tokens_per_s", Rate(r.tokens, r.seconds)},
      {"latency_us",
       {{"count", r.latency.count},
        {"mean", r.latency.mean_us},
        {"p50", r.latency.p50_us},
        {"p90", r.latency.p90_us},
        {"p99", r.latency.p99_us},
        {"max", r.latency.max_us}}},
      {"errors", r.errors},
      {"first_error", r.first_error},
  };
  return doc.dump() + "\n";
}

}  // namespace aaren::cli

// SPDX-License-Identifier: Apache-2.0
// The result of one `aaren-cli bench` run and its two renderings: an aligned table for people
// and a JSON object for scripts (bench/ collects those).
#ifndef AAREN_CLIENT_CLI_BENCH_REPORT_H_
#define AAREN_CLIENT_CLI_BENCH_REPORT_H_

#include <cstdint>
#include <string>
#include <vector>

namespace aaren::cli {

// Latency percentiles in microseconds (nearest rank); all zero for no samples.
struct LatencySummary {
  int64_t count = 0;
  double mean_us = 0;
  double p50_us = 0;
  double p90_us = 0;
  double p99_us = 0;
  double max_us = 0;
};

// Summarises nanosecond samples (reorders `samples_ns`).
LatencySummary SummarizeLatencies(std::vector<int64_t>& samples_ns);

struct BenchReport {
  std::string mode;  // stream, echo, score, sessions
  std::string target;
  std::string model;
  int64_t concurrency = 0;  // streams, or calls in flight
  int64_t calls = 0;        // appends (stream, echo), Score requests, CreateSession calls
  int64_t tokens = 0;       // input tokens processed
  double seconds = 0;       // wall time of the measured phase
  LatencySummary latency;   // per call
  int64_t errors = 0;       // failed streams or calls
  std::string first_error;  // empty when errors == 0
};

// Header row plus one row: mode, model, concurrency, calls, tokens, seconds, calls/s, tokens/s,
// p50/p90/p99/max latency in µs, errors.
std::string FormatBenchTable(const BenchReport& report);
// One JSON object (one line) with the same fields plus the target and the first error.
std::string FormatBenchJson(const BenchReport& report);

}  // namespace aaren::cli

#endif  // AAREN_CLIENT_CLI_BENCH_REPORT_H_

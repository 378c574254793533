// SPDX-License-Identifier: Apache-2.0
// Tests of client/cli/bench_report.h: nearest-rank latency percentiles on known samples and the
// table and JSON renderings of a report.
#include "client/cli/bench_report.h"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_split.h"

namespace aaren::cli {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// Samples of 1..n microseconds, in nanoseconds, shuffled.
std::vector<int64_t> ShuffledMicroseconds(int64_t n) {
  std::vector<int64_t> samples(n);
  for (int64_t i = 0; i < n; ++i) samples[i] = (i + 1) * 1000;
  std::shuffle(samples.begin(), samples.end(), std::mt19937_64(7));
  return samples;
}

TEST(SummarizeLatenciesTest, NoSamplesIsAllZero) {
  std::vector<int64_t> samples;
  const LatencySummary s = SummarizeLatencies(samples);
  EXPECT_EQ(s.count, 0);
  EXPECT_EQ(s.mean_us, 0);
  EXPECT_EQ(s.p50_us, 0);
  EXPECT_EQ(s.p90_us, 0);
  EXPECT_EQ(s.p99_us, 0);
  EXPECT_EQ(s.max_us, 0);
}

TEST(SummarizeLatenciesTest, OneSampleIsEveryPercentile) {
  std::vector<int64_t> samples = {2500};
  const LatencySummary s = SummarizeLatencies(samples);
  EXPECT_EQ(s.count, 1);
  EXPECT_DOUBLE_EQ(s.mean_us, 2.5);
  EXPECT_DOUBLE_EQ(s.p50_us, 2.5);
  EXPECT_DOUBLE_EQ(s.p90_us, 2.5);
  EXPECT_DOUBLE_EQ(s.p99_us, 2.5);
  EXPECT_DOUBLE_EQ(s.max_us, 2.5);
}

TEST(SummarizeLatenciesTest, HundredSamples) {
  std::vector<int64_t> samples = ShuffledMicroseconds(100);
  const LatencySummary s = SummarizeLatencies(samples);
  EXPECT_EQ(s.count, 100);
  EXPECT_DOUBLE_EQ(s.mean_us, 50.5);
  EXPECT_DOUBLE_EQ(s.p50_us, 50);  // rank ceil(0.5 * 100) = 50
  EXPECT_DOUBLE_EQ(s.p90_us, 90);
  EXPECT_DOUBLE_EQ(s.p99_us, 99);
  EXPECT_DOUBLE_EQ(s.max_us, 100);
}

TEST(SummarizeLatenciesTest, TenSamplesUseNearestRank) {
  std::vector<int64_t> samples = ShuffledMicroseconds(10);
  const LatencySummary s = SummarizeLatencies(samples);
  EXPECT_DOUBLE_EQ(s.mean_us, 5.5);
  EXPECT_DOUBLE_EQ(s.p50_us, 5);   // rank 5
  EXPECT_DOUBLE_EQ(s.p90_us, 9);   // rank 9
  EXPECT_DOUBLE_EQ(s.p99_us, 10);  // rank ceil(9.9) = 10
  EXPECT_DOUBLE_EQ(s.max_us, 10);
}

TEST(SummarizeLatenciesTest, ThreeSamples) {
  std::vector<int64_t> samples = {9000, 1000, 2000};
  const LatencySummary s = SummarizeLatencies(samples);
  EXPECT_DOUBLE_EQ(s.mean_us, 4);
  EXPECT_DOUBLE_EQ(s.p50_us, 2);  // rank ceil(1.5) = 2
  EXPECT_DOUBLE_EQ(s.p90_us, 9);  // rank ceil(2.7) = 3
  EXPECT_DOUBLE_EQ(s.p99_us, 9);
  EXPECT_DOUBLE_EQ(s.max_us, 9);
  EXPECT_THAT(samples, ElementsAre(1000, 2000, 9000));  // sorted in place, as documented
}

TEST(SummarizeLatenciesTest, SkewedSamples) {
  // 990 fast calls of 100 µs and 10 slow ones of 50 ms: p99 is rank 990, the last fast one.
  std::vector<int64_t> samples(990, 100'000);
  samples.insert(samples.end(), 10, 50'000'000);
  std::shuffle(samples.begin(), samples.end(), std::mt19937_64(3));
  const LatencySummary s = SummarizeLatencies(samples);
  EXPECT_EQ(s.count, 1000);
  EXPECT_DOUBLE_EQ(s.p50_us, 100);
  EXPECT_DOUBLE_EQ(s.p90_us, 100);
  EXPECT_DOUBLE_EQ(s.p99_us, 100);
  EXPECT_DOUBLE_EQ(s.max_us, 50'000);
  EXPECT_NEAR(s.mean_us, (990 * 100.0 + 10 * 50'000.0) / 1000, 1e-9);

  samples.push_back(50'000'000);  // 1001 samples: rank ceil(990.99) = 991 is slow
  EXPECT_DOUBLE_EQ(SummarizeLatencies(samples).p99_us, 50'000);
}

TEST(SummarizeLatenciesTest, PercentilesAreOrderedAndSamples) {
  std::mt19937_64 rng(11);
  std::lognormal_distribution<double> latency(10, 1);
  for (int n : {2, 7, 64, 999, 5000}) {
    std::vector<int64_t> samples(n);
    for (int64_t& v : samples) v = static_cast<int64_t>(latency(rng));
    std::vector<int64_t> sorted = samples;
    std::sort(sorted.begin(), sorted.end());
    const LatencySummary s = SummarizeLatencies(samples);
    EXPECT_LE(s.p50_us, s.p90_us);
    EXPECT_LE(s.p90_us, s.p99_us);
    EXPECT_LE(s.p99_us, s.max_us);
    EXPECT_DOUBLE_EQ(s.max_us, sorted.back() / 1e3);
    EXPECT_DOUBLE_EQ(s.p50_us, sorted[(n + 1) / 2 - 1] / 1e3) << n;
    EXPECT_DOUBLE_EQ(s.p90_us, sorted[(9 * n + 9) / 10 - 1] / 1e3) << n;  // ceil(0.9 n)
  }
}

BenchReport SampleReport() {
  BenchReport r;
  r.mode = "stream";
  r.target = "127.0.0.1:50051";
  r.model = "demo-lm";
  r.concurrency = 16;
  r.calls = 20000;
  r.tokens = 40000;
  r.seconds = 1.25;
  r.latency = {20000, 900.5, 933.8, 1316.6, 2521.6, 4714.3};
  return r;
}

TEST(FormatBenchTableTest, HeaderAndOneAlignedRow) {
  const std::string table = FormatBenchTable(SampleReport());
  const std::vector<std::string> lines = absl::StrSplit(table, '\n');
  ASSERT_EQ(lines.size(), 3u);  // header, row, "" after the final newline
  EXPECT_EQ(lines[2], "");
  const std::vector<std::string> header = absl::StrSplit(lines[0], ' ', absl::SkipEmpty());
  const std::vector<std::string> row = absl::StrSplit(lines[1], ' ', absl::SkipEmpty());
  EXPECT_THAT(header,
              ElementsAre("MODE", "MODEL", "CONCURRENCY", "CALLS", "TOKENS", "SECONDS", "CALLS/S",
                          "TOKENS/S", "P50_US", "P90_US", "P99_US", "MAX_US", "ERRORS"));
  EXPECT_THAT(row, ElementsAre("stream", "demo-lm", "16", "20000", "40000", "1.250", "16000.0",
                               "32000.0", "933.8", "1316.6", "2521.6", "4714.3", "0"));
  // Columns line up: each header name starts where its value starts.
  EXPECT_EQ(lines[0].find("CALLS/S"), lines[1].find("16000.0"));
  EXPECT_EQ(lines[0].find("ERRORS"), lines[1].rfind("0"));
}

TEST(FormatBenchTableTest, ZeroSecondsHasZeroRates) {
  BenchReport r = SampleReport();
  r.seconds = 0;
  const std::vector<std::string> lines = absl::StrSplit(FormatBenchTable(r), '\n');
  const std::vector<std::string> row = absl::StrSplit(lines[1], ' ', absl::SkipEmpty());
  ASSERT_EQ(row.size(), 13u);
  EXPECT_EQ(row[5], "0.000");
  EXPECT_EQ(row[6], "0.0");
  EXPECT_EQ(row[7], "0.0");
}

TEST(FormatBenchJsonTest, OneLineWithEveryField) {
  BenchReport r = SampleReport();
  r.errors = 2;
  r.first_error = "UNAVAILABLE: \"draining\"";
  const std::string text = FormatBenchJson(r);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.find('\n'), text.size() - 1);  // one line
  const nlohmann::json doc = nlohmann::json::parse(text);
  EXPECT_EQ(doc["mode"], "stream");
  EXPECT_EQ(doc["target"], "127.0.0.1:50051");
  EXPECT_EQ(doc["model"], "demo-lm");
  EXPECT_EQ(doc["concurrency"], 16);
  EXPECT_EQ(doc["calls"], 20000);
  EXPECT_EQ(doc["tokens"], 40000);
  EXPECT_DOUBLE_EQ(doc["seconds"].get<double>(), 1.25);
  EXPECT_DOUBLE_EQ(doc["calls_per_s"].get<double>(), 16000);
  EXPECT_DOUBLE_EQ(doc["tokens_per_s"].get<double>(), 32000);
  EXPECT_EQ(doc["latency_us"]["count"], 20000);
  EXPECT_DOUBLE_EQ(doc["latency_us"]["mean"].get<double>(), 900.5);
  EXPECT_DOUBLE_EQ(doc["latency_us"]["p50"].get<double>(), 933.8);
  EXPECT_DOUBLE_EQ(doc["latency_us"]["p90"].get<double>(), 1316.6);
  EXPECT_DOUBLE_EQ(doc["latency_us"]["p99"].get<double>(), 2521.6);
  EXPECT_DOUBLE_EQ(doc["latency_us"]["max"].get<double>(), 4714.3);
  EXPECT_EQ(doc["errors"], 2);
  EXPECT_EQ(doc["first_error"], "UNAVAILABLE: \"draining\"");
  // Keys in the documented order, not sorted.
  EXPECT_LT(text.find("\"mode\""), text.find("\"target\""));
  EXPECT_LT(text.find("\"seconds\""), text.find("\"calls_per_s\""));
  EXPECT_LT(text.find("\"latency_us\""), text.find("\"errors\""));
}

TEST(FormatBenchJsonTest, ZeroSecondsHasZeroRates) {
  BenchReport r;
  r.mode = "echo";
  const nlohmann::json doc = nlohmann::json::parse(FormatBenchJson(r));
  EXPECT_EQ(doc["calls_per_s"].get<double>(), 0);
  EXPECT_EQ(doc["tokens_per_s"].get<double>(), 0);
  EXPECT_EQ(doc["first_error"], "");
  EXPECT_THAT(doc.dump(), HasSubstr("\"latency_us\""));
}

}  // namespace
}  // namespace aaren::cli

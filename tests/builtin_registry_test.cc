// SPDX-License-Identifier: Apache-2.0
// The built-in Prometheus exporter: exposition text (types, label escaping, cumulative
// histogram buckets) and serving it over HTTP.
#include "server/metrics/builtin_registry.h"

#include <arpa/inet.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

namespace aaren {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST(BuiltinRegistryTest, RendersCountersGaugesAndLabels) {
  BuiltinRegistry r;
  r.AddCounter("aaren_x_total", "Things.\nSecond line \\ here");
  r.AddGauge("aaren_g", "A gauge.");
  r.Increment("aaren_x_total", {{"rpc", "Append"}, {"code", "OK"}}, 2);
  r.Increment("aaren_x_total", {{"rpc", "Append"}, {"code", "OK"}}, 3);
  r.Increment("aaren_x_total", {{"rpc", "a\"b\\c\nd"}, {"code", "OK"}}, 1);
  r.Set("aaren_g", {}, 0.25);
  r.Set("aaren_g", {}, 1.5);
  r.Increment("aaren_unknown_total", {}, 1);  // ignored
  r.Set("aaren_x_total", {}, 7);              // wrong type: ignored
  const std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("# HELP aaren_x_total Things.\\nSecond line \\\\ here\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE aaren_x_total counter\n"));
  EXPECT_THAT(text, HasSubstr("aaren_x_total{rpc=\"Append\",code=\"OK\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("aaren_x_total{rpc=\"a\\\"b\\\\c\\nd\",code=\"OK\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE aaren_g gauge\naaren_g 1.5\n"));
  EXPECT_THAT(text, Not(HasSubstr("aaren_unknown")));
  EXPECT_THAT(text, Not(HasSubstr("aaren_x_total 7")));
  // Declaration order is kept.
  EXPECT_LT(text.find("aaren_x_total"), text.find("aaren_g"));
}

TEST(BuiltinRegistryTest, HistogramBucketsAreCumulative) {
  BuiltinRegistry r;
  r.AddHistogram("aaren_h_seconds", "H.", {0.001, 0.01, 0.1});
  for (double v : {0.0005, 0.001, 0.005, 0.05, 0.05, 3.0})
    r.Observe("aaren_h_seconds", {{"p", "x"}}, v);
  const std::string text = r.Render();
  EXPECT_THAT(text, HasSubstr("aaren_h_seconds_bucket{p=\"x\",le=\"0.001\"} 2\n"));
  EXPECT_THAT(text, HasSubstr("aaren_h_seconds_bucket{p=\"x\",le=\"0.01\"} 3\n"));
  EXPECT_THAT(text, HasSubstr("aaren_h_seconds_bucket{p=\"x\",le=\"0.1\"} 5\n"));
  EXPECT_THAT(text, HasSubstr("aaren_h_seconds_bucket{p=\"x\",le=\"+Inf\"} 6\n"));
  EXPECT_THAT(text, HasSubstr("aaren_h_seconds_count{p=\"x\"} 6\n"));
  EXPECT_THAT(text, HasSubstr("aaren_h_seconds_sum{p=\"x\"} 3.1065\n"));
}

TEST(BuiltinRegistryTest, ServesMetricsOverHttpAfterCollecting) {
  BuiltinRegistry r;
  r.AddGauge("aaren_g", "A gauge.");
  int collected = 0;
  absl::StatusOr<int> port = r.Serve("127.0.0.1", 0, [&] { r.Set("aaren_g", {}, ++collected); });
  ASSERT_TRUE(port.ok()) << port.status();
  ASSERT_GT(*port, 0);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(*port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  const std::string request = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  std::string response;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof(buf))) > 0;)
    response.append(buf, static_cast<size_t>(n));
  close(fd);
  EXPECT_THAT(response, HasSubstr("200 OK"));
  EXPECT_THAT(response, HasSubstr("Content-Type: text/plain; version=0.0.4"));
  EXPECT_THAT(response, HasSubstr("\naaren_g 1\n"));
  EXPECT_EQ(collected, 1);
}

TEST(BuiltinRegistryTest, ServeOnABusyPortIsUnavailable) {
  BuiltinRegistry a;
  absl::StatusOr<int> port = a.Serve("127.0.0.1", 0, nullptr);
  ASSERT_TRUE(port.ok());
  BuiltinRegistry b;
  absl::StatusOr<int> again = b.Serve("127.0.0.1", *port, nullptr);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("--metrics_port"));
}

}  // namespace
}  // namespace aaren

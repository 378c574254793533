// SPDX-License-Identifier: Apache-2.0
#include "server/metrics/builtin_registry.h"

#include <civetweb.h>

#include <charconv>
#include <cmath>
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace aaren {
namespace {

// Label values escape backslash, double quote and newline; HELP text backslash and newline.
std::string Escape(const std::string& s, bool quote) {
  std::string out;
  for (char c : s) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && quote) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
  return out;
}

std::string RenderLabels(const MetricLabels& labels, const std::string& extra = "") {
  if (labels.empty() && extra.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i != 0) out += ",";
    absl::StrAppend(&out, labels[i].first, "=\"", Escape(labels[i].second, true), "\"");
  }
  if (!extra.empty()) absl::StrAppend(&out, labels.empty() ? "" : ",", extra);
  return out + "}";
}

std::string FormatValue(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return absl::StrFormat("%.0f", v);
  char buf[32];  // shortest text that reads back as the same double
  const auto r = std::to_chars(buf, buf + sizeof(buf), v);
  return std::string(buf, r.ptr);
}

// The rendered label set of a series key with `le` added: {a="x"} -> {a="x",le="0.5"}.
std::string WithLe(const std::string& key, const std::string& le) {
  const std::string le_pair = absl::StrCat("le=\"", le, "\"");
  if (key.empty()) return absl::StrCat("{", le_pair, "}");
  return absl::StrCat(key.substr(0, key.size() - 1), ",", le_pair, "}");
}

}  // namespace

BuiltinRegistry::~BuiltinRegistry() {
  if (http_ != nullptr) mg_stop(http_);
}

void BuiltinRegistry::Add(const std::string& name, Type type, const std::string& help,
                          std::vector<double> bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  if (families_.count(name) != 0) return;
  order_.push_back(name);
  families_.emplace(name, Family{type, help, std::move(bounds), {}});
}

void BuiltinRegistry::AddCounter(const std::string& name, const std::string& help) {
  Add(name, Type::kCounter, help, {});
}
void BuiltinRegistry::AddGauge(const std::string& name, const std::string& help) {
  Add(name, Type::kGauge, help, {});
}
void BuiltinRegistry::AddHistogram(const std::string& name, const std::string& help,
                                   std::vector<double> bounds) {
  Add(name, Type::kHistogram, help, std::move(bounds));
}

BuiltinRegistry::Series* BuiltinRegistry::FindSeries(const std::string& name,
                                                     const MetricLabels& labels, Type type) {
  auto it = families_.find(name);
  if (it == families_.end() || it->second.type != type) return nullptr;
  Series& s = it->second.series[RenderLabels(labels)];
  if (type == Type::kHistogram && s.bucket_counts.empty()) {
    s.bucket_counts.assign(it->second.bounds.size(), 0);
  }
  return &s;
}

void BuiltinRegistry::Increment(const std::string& name, const MetricLabels& labels, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Series* s = FindSeries(name, labels, Type::kCounter)) s->value += value;
}

void BuiltinRegistry::Set(const std::string& name, const MetricLabels& labels, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  if (Series* s = FindSeries(name, labels, Type::kGauge)) s->value = value;
}

void BuiltinRegistry::Observe(const std::string& name, const MetricLabels& labels, double value) {
  std::lock_guard<std::mutex> lock(mu_);
  Series* s = FindSeries(name, labels, Type::kHistogram);
  if (s == nullptr) return;
  const std::vector<double>& bounds = families_.at(name).bounds;
  for (size_t b = 0; b < bounds.size(); ++b) {
    if (value <= bounds[b]) {
      ++s->bucket_counts[b];
      break;
    }
  }
  ++s->count;
  s->sum += value;
}

std::string BuiltinRegistry::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const std::string& name : order_) {
    const Family& f = families_.at(name);
    const char* type = f.type == Type::kCounter ? "counter"
                       : f.type == Type::kGauge ? "gauge"
                                                : "histogram";
    absl::StrAppend(&out, "# HELP ", name, " ", Escape(f.help, false), "\n# TYPE ", name, " ", type,
                    "\n");
    for (const auto& [key, s] : f.series) {
      if (f.type != Type::kHistogram) {
        absl::StrAppend(&out, name, key, " ", FormatValue(s.value), "\n");
        continue;
      }
      uint64_t cumulative = 0;
      for (size_t b = 0; b < f.bounds.size(); ++b) {
        cumulative += s.bucket_counts[b];
        absl::StrAppend(&out, name, "_bucket", WithLe(key, FormatValue(f.bounds[b])), " ",
                        cumulative, "\n");
      }
      absl::StrAppend(&out, name, "_bucket", WithLe(key, "+Inf"), " ", s.count, "\n");
      absl::StrAppend(&out, name, "_sum", key, " ", FormatValue(s.sum), "\n");
      absl::StrAppend(&out, name, "_count", key, " ", s.count, "\n");
    }
  }
  return out;
}

int BuiltinRegistry::HandleMetrics(mg_connection* conn, void* self_ptr) {
  auto* self = static_cast<BuiltinRegistry*>(self_ptr);
  if (self->collect_) self->collect_();
  const std::string body = self->Render();
  mg_printf(conn,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
            "Content-Length: %zu\r\nConnection: close\r\n\r\n",
            body.size());
  mg_write(conn, body.data(), body.size());
  return 200;
}

absl::StatusOr<int> BuiltinRegistry::Serve(const std::string& host, int port,
                                           std::function<void()> collect) {
  collect_ = std::move(collect);
  mg_init_library(0);
  const std::string listen = absl::StrCat(host, ":", port);
  const char* options[] = {"listening_ports", listen.c_str(), "num_threads", "2", nullptr};
  mg_callbacks callbacks{};
  // civetweb says why mg_start failed only through its log callback (no user data yet then).
  static thread_local std::string start_error;
  start_error.clear();
  callbacks.log_message = [](const mg_connection*, const char* message) {
    start_error = message;
    return 1;
  };
  http_ = mg_start(&callbacks, nullptr, options);
  if (http_ == nullptr) {
    return absl::UnavailableError(absl::StrCat("--metrics_port: cannot listen on ", listen,
                                               " for /metrics", start_error.empty() ? "" : ": ",
                                               start_error));
  }
  mg_set_request_handler(http_, "/metrics", &BuiltinRegistry::HandleMetrics, this);
  mg_server_port ports[1];
  if (mg_get_server_ports(http_, 1, ports) < 1) {
    return absl::InternalError("metrics: civetweb reports no listening port");
  }
  return ports[0].port;
}

}  // namespace aaren

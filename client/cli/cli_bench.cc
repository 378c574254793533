// SPDX-License-Identifier: Apache-2.0
// `aaren-cli bench`: the load generator. Four modes, one report format (client/cli/bench_report.h):
//   stream    N closed-loop Aaren.Stream sessions appending random tokens (bench_streams.h);
//   echo      the same over BenchEcho.Echo (no model work, same message sizes): gRPC's ceiling;
//   score     Score throughput on random sequences, several requests in flight;
//   sessions  CreateSession rate (1-token prefix each), many in flight: idle-session capacity.
#include <chrono>
#include <cstdint>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "client/cli/bench_report.h"
#include "client/cli/bench_streams.h"
#include "client/cli/cli_common.h"
#include "client/cli/cli_flags.h"
#include "client/cli/commands.h"
#include "client/cli/random_input.h"

ABSL_FLAG(std::string, mode, "stream", "stream, echo, score or sessions.");
ABSL_FLAG(int, sessions, 1, "stream, echo: concurrent streams, each on its own session.");
ABSL_FLAG(int64_t, tokens_per_session, 1000,
          "stream, echo: tokens each stream appends; 0: until --duration.");
ABSL_FLAG(int64_t, tokens_per_append, 1, "stream, echo: tokens per append message.");
ABSL_FLAG(absl::Duration, duration, absl::ZeroDuration(),
          "stream, echo: stop each stream after this long (e.g. 10s; with --tokens_per_session 0 "
          "to run exactly this long); 0: no limit.");
ABSL_FLAG(int, sequences, 64, "score: sequences per round.");
ABSL_FLAG(int64_t, length, 1024, "score: tokens per sequence.");
ABSL_FLAG(int, rounds, 3, "score: how many times the sequences are scored.");
ABSL_FLAG(int64_t, count, 100000, "sessions: sessions to create.");
ABSL_FLAG(bool, cleanup, true, "stream, sessions: delete the sessions created, after measuring.");

namespace aaren::cli {
namespace {

constexpr int kScoreInFlight = 4;
constexpr int kSessionsInFlight = 256;
constexpr int kCleanupInFlight = 256;

// Fills `report` from a failed or finished batch of calls.
void RecordStatus(const absl::Status& status, BenchReport& report) {
  if (status.ok()) return;
  ++report.errors;
  if (report.first_error.empty()) report.first_error = status.ToString();
}

int InFlightFlag(int fallback) {
  const int n = absl::GetFlag(FLAGS_in_flight);
  return n > 0 ? n : fallback;
}

absl::Status BenchStreams(client::AarenClient& client, const v1::ModelInfo& model, bool echo,
                          BenchReport& report, std::vector<std::string>& created) {
  StreamLoadOptions options;
  options.echo = echo;
  options.streams = absl::GetFlag(FLAGS_sessions);
  options.tokens_per_append = absl::GetFlag(FLAGS_tokens_per_append);
  options.appends_per_stream = absl::GetFlag(FLAGS_tokens_per_session) / options.tokens_per_append;
  options.duration = absl::GetFlag(FLAGS_duration);
  options.model = model;
  options.idle_ttl_seconds = absl::GetFlag(FLAGS_idle_ttl);
  options.seed = absl::GetFlag(FLAGS_seed);
  absl::StatusOr<v1::OutputMode> mode = OutputModeFlag(v1::OUTPUT_MODE_ALL);
  if (!mode.ok()) return mode.status();
  options.output_mode = *mode;
  if (options.streams < 1 || options.tokens_per_append < 1 ||
      (options.appends_per_stream < 1 && options.duration <= absl::ZeroDuration())) {
    return absl::InvalidArgumentError(
        "--sessions and --tokens_per_append must be >= 1, and --tokens_per_session >= "
        "--tokens_per_append unless --duration is set");
  }
  StreamLoadResult result = RunStreamLoad(client, options);
  created = std::move(result.session_ids);
  report.concurrency = options.streams;
  report.calls = result.appends;
  report.tokens = result.appends * options.tokens_per_append;
  report.seconds = result.seconds;
  report.latency = SummarizeLatencies(result.latencies_ns);
  report.errors = result.failed_streams;
  if (!result.first_error.ok()) {
    report.first_error = result.first_error.ToString();
    if (echo && absl::IsUnimplemented(result.first_error)) {
      report.first_error += " (is the server running with --enable_echo?)";
    }
  }
  return absl::OkStatus();
}

absl::Status BenchScore(client::AarenClient& client, const v1::ModelInfo& model,
                        BenchReport& report) {
  const int sequences = absl::GetFlag(FLAGS_sequences);
  const int64_t length = absl::GetFlag(FLAGS_length);
  const int rounds = absl::GetFlag(FLAGS_rounds);
  const int batch = absl::GetFlag(FLAGS_batch_sequences);
  absl::StatusOr<v1::OutputMode> mode = OutputModeFlag(v1::OUTPUT_MODE_ALL);
  if (!mode.ok()) return mode.status();
  if (sequences < 1 || length < 1 || rounds < 1 || batch < 1) {
    return absl::InvalidArgumentError(
        "--sequences, --length, --rounds and --batch_sequences must be >= 1");
  }
  // One round's requests, built before the clock starts and sent `rounds` times.
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  std::vector<v1::ScoreRequest> requests;
  for (int first = 0; first < sequences; first += batch) {
    v1::ScoreRequest& request = requests.emplace_back();
    request.set_model(model.name());
    request.set_output_mode(*mode);
    for (int i = first; i < std::min(sequences, first + batch); ++i) {
      FillRandomSequence(model, length, rng, *request.add_sequences());
    }
  }
  std::vector<int64_t> latencies;
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = client.ScoreMany(
      requests.size() * rounds, InFlightFlag(kScoreInFlight),
      [&](size_t i) { return requests[i % requests.size()]; },
      [&](size_t i, v1::ScoreResponse&) {
        ++report.calls;
        report.tokens += requests[i % requests.size()].sequences_size() * length;
        return absl::OkStatus();
      },
      &latencies);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.concurrency = InFlightFlag(kScoreInFlight);
  report.latency = SummarizeLatencies(latencies);
  RecordStatus(status, report);
  return absl::OkStatus();
}

absl::Status BenchSessions(client::AarenClient& client, const v1::ModelInfo& model,
                           BenchReport& report, std::vector<std::string>& created) {
  const int64_t count = absl::GetFlag(FLAGS_count);
  if (count < 1) return absl::InvalidArgumentError("--count must be >= 1");
  std::mt19937_64 rng(absl::GetFlag(FLAGS_seed));
  std::vector<int64_t> latencies;
  created.reserve(count);
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = client.CreateSessionMany(
      count, InFlightFlag(kSessionsInFlight),
      [&](size_t) {
        v1::CreateSessionRequest request;
        request.set_model(model.name());
        request.set_idle_ttl_seconds(absl::GetFlag(FLAGS_idle_ttl));
        FillRandomSequence(model, 1, rng, *request.mutable_prefix());
        return request;
      },
      [&](size_t, v1::Session& session) {
        created.push_back(session.session_id());
        return absl::OkStatus();
      },
      &latencies);
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  report.concurrency = InFlightFlag(kSessionsInFlight);
  report.calls = static_cast<int64_t>(created.size());
  report.tokens = report.calls;
  report.latency = SummarizeLatencies(latencies);
  RecordStatus(status, report);
  return absl::OkStatus();
}

// Deletes the sessions a run created; reports the rate on stderr.
absl::Status Cleanup(client::AarenClient& client, const std::vector<std::string>& session_ids) {
  const auto start = std::chrono::steady_clock::now();
  const absl::Status status = client.DeleteSessionMany(session_ids, kCleanupInFlight);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::cerr << CommandName() << ": cleanup: deleted " << session_ids.size() << " sessions in "
            << seconds << " s (" << static_cast<int64_t>(session_ids.size() / seconds)
            << " per s)\n";
  return status;
}

int RunBench(const std::vector<std::string>&) {
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode != "stream" && mode != "echo" && mode != "score" && mode != "sessions") {
    return UsageError(
        absl::StrCat("--mode must be stream, echo, score or sessions, got '", mode, "'"));
  }
  if (absl::GetFlag(FLAGS_model).empty()) return UsageError("--model is required");
  auto made = MakeClient();
  if (!made.ok()) return ReportError(made.status(), kExitUsage);
  std::unique_ptr<client::AarenClient> client = *std::move(made);
  absl::StatusOr<v1::ModelInfo> model = client->GetModel(absl::GetFlag(FLAGS_model));
  if (!model.ok()) return ReportError(model.status());

  BenchReport report;
  report.mode = mode;
  report.target = absl::GetFlag(FLAGS_target);
  report.model = model->name();
  std::vector<std::string> created;
  absl::Status status;
  if (mode == "stream" || mode == "echo") {
    status = BenchStreams(*client, *model, mode == "echo", report, created);
  } else if (mode == "score") {
    status = BenchScore(*client, *model, report);
  } else {
    status = BenchSessions(*client, *model, report, created);
  }
  if (!status.ok()) return UsageError(status.message());
  std::cout << (absl::GetFlag(FLAGS_json) ? FormatBenchJson(report) : FormatBenchTable(report));
  if (report.errors > 0)
    std::cerr << CommandName() << ": first error: " << report.first_error << "\n";
  if (absl::GetFlag(FLAGS_cleanup) && !created.empty()) {
    const absl::Status cleanup = Cleanup(*client, created);
    if (!cleanup.ok()) return ReportError(cleanup);
  }
  return report.errors > 0 ? kExitFailure : kExitOk;
}

}  // namespace

Subcommand BenchCommand() {
  return {
      "bench",
      "load generator: streaming appends, echo, Score throughput, session creation",
      "Usage: aaren-cli bench --model M --mode stream|echo [--sessions N]\n"
      "                       [--tokens_per_session N | --duration 10s] [--tokens_per_append N]\n"
      "       aaren-cli bench --model M --mode score [--sequences 64 --length 1024 --rounds 3]\n"
      "       aaren-cli bench --model M --mode sessions [--count 100000]\n\n"
      "stream: --sessions concurrent Stream calls, each on a new session, each appending\n"
      "  random tokens and waiting for every reply before the next append (closed loop).\n"
      "  Latency is per append (write to reply).\n"
      "echo: the same over BenchEcho.Echo (aaren-server --enable_echo): replies of the same\n"
      "  size without model work, the transport's ceiling for comparison.\n"
      "score: Score requests of --batch_sequences random sequences, --in_flight at a time.\n"
      "sessions: --count CreateSession calls with a 1-token prefix, --in_flight at a time.\n"
      "Prints a table (or --json): calls, tokens, seconds, calls/s, tokens/s, latency\n"
      "percentiles in microseconds and failed streams or calls (exit 1 if any).",
      {"mode", "model", "sessions", "tokens_per_session", "tokens_per_append", "duration",
       "sequences", "length", "rounds", "count", "batch_sequences", "in_flight", "output_mode",
       "idle_ttl", "seed", "cleanup", "json"},
      0,
      RunBench};
}

}  // namespace aaren::cli

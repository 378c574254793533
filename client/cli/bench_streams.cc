// SPDX-License-Identifier: Apache-2.0
#include "client/cli/bench_streams.h"

#include <grpcpp/client_context.h>
#include <grpcpp/support/client_callback.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <type_traits>

#include "aaren/v1/bench.grpc.pb.h"
#include "absl/strings/str_cat.h"
#include "client/cli/random_input.h"
#include "client/grpc_status.h"

namespace aaren::cli {
namespace {

using Clock = std::chrono::steady_clock;

// What the streams of one run share: the options, and the results each stream adds when it ends.
class LoadRun {
 public:
  LoadRun(client::AarenClient& client, const StreamLoadOptions& options)
      : client_(client),
        options_(options),
        deadline_(options.duration > absl::ZeroDuration()
                      ? Clock::now() + absl::ToChronoNanoseconds(options.duration)
                      : Clock::time_point::max()) {}

  client::AarenClient& client() { return client_; }
  const StreamLoadOptions& options() const { return options_; }
  Clock::time_point deadline() const { return deadline_; }

  // Called once by each stream when it ends (from a gRPC callback thread).
  void StreamEnded(const absl::Status& status, std::vector<int64_t>& latencies,
                   std::string session_id, Clock::time_point first_send,
                   Clock::time_point last_reply) {
    std::lock_guard<std::mutex> lock(mu_);
    result_.latencies_ns.insert(result_.latencies_ns.end(), latencies.begin(), latencies.end());
    result_.appends += static_cast<int64_t>(latencies.size());
    if (!session_id.empty()) result_.session_ids.push_back(std::move(session_id));
    if (!latencies.empty()) {
      first_send_ = std::min(first_send_, first_send);
      last_reply_ = std::max(last_reply_, last_reply);
    }
    if (!status.ok() && result_.failed_streams++ == 0) result_.first_error = status;
    ++ended_;
    cv_.notify_one();
  }

  // Blocks until `streams` streams have ended; returns the merged result.
  StreamLoadResult Wait(int streams) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return ended_ == streams; });
    if (result_.appends > 0) {
      result_.seconds = std::chrono::duration<double>(last_reply_ - first_send_).count();
    }
    return std::move(result_);
  }

 private:
  client::AarenClient& client_;
  const StreamLoadOptions& options_;
  const Clock::time_point deadline_;
  std::mutex mu_;
  std::condition_variable cv_;
  int ended_ = 0;  // guarded by mu_, as are the fields below
  StreamLoadResult result_;
  Clock::time_point first_send_ = Clock::time_point::max();
  Clock::time_point last_reply_ = Clock::time_point::min();
};

// The StreamRequest inside each kind of request message, and how a call of each kind starts.
v1::StreamRequest& Payload(v1::StreamRequest& request) { return request; }
v1::StreamRequest& Payload(v1::EchoRequest& request) { return *request.mutable_request(); }

void BeginCall(client::AarenClient& client, grpc::ClientContext* context,
               grpc::ClientBidiReactor<v1::StreamRequest, v1::StreamResponse>* reactor) {
  client.stub().async()->Stream(context, reactor);
}
void BeginCall(client::AarenClient& client, grpc::ClientContext* context,
               grpc::ClientBidiReactor<v1::EchoRequest, v1::StreamResponse>* reactor) {
  client.echo_stub().async()->Echo(context, reactor);
}

// One closed-loop stream. Each step (the open, then each append) starts one write and one read;
// the next step starts when both have completed, so at most one of each is ever in flight (a
// reply can arrive before its write reports done). Deletes itself in OnDone.
template <typename Request>
class ClosedLoopStream final : public grpc::ClientBidiReactor<Request, v1::StreamResponse> {
 public:
  ClosedLoopStream(LoadRun& run, int index)
      : run_(run), rng_(run.options().seed * 0x9E3779B97F4A7C15ull + index) {
    const StreamLoadOptions& options = run.options();
    if (options.appends_per_stream > 0) latencies_.reserve(options.appends_per_stream);
    if constexpr (std::is_same_v<Request, v1::EchoRequest>) {
      // Replies as large as real ones: one output row per token in mode all, one in mode last.
      const int64_t rows = options.output_mode == v1::OUTPUT_MODE_ALL    ? options.tokens_per_append
                           : options.output_mode == v1::OUTPUT_MODE_LAST ? 1
                                                                         : 0;
      request_.set_output_floats(static_cast<uint32_t>(rows * options.model.output_dim()));
    }
  }

  void Start() {
    // No aaren-session-id routing metadata: each stream creates its session under a server-made
    // id, unknown when the call starts (client/session_routing.h). The whole stream stays on
    // the replica that created the session anyway, and Echo has no session.
    run_.client().PrepareStreamContext(context_);
    BeginCall(run_.client(), &context_, this);
    v1::OpenSession* open = Payload(request_).mutable_open();
    open->set_model(run_.options().model.name());
    open->set_idle_ttl_seconds(run_.options().idle_ttl_seconds);
    StartStep();
    this->StartCall();
  }

  void OnWriteDone(bool ok) override {
    if (ok) StepHalfDone();
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the call is over; OnDone has its status
    const Clock::time_point now = Clock::now();
    if (!opened_) {
      opened_ = true;
      if (response_.has_session()) session_id_ = response_.session().session_id();
    } else if (!response_.has_append()) {
      // Not what the protocol promises: end the stream rather than measure nonsense.
      bad_reply_ = true;
      context_.TryCancel();
      return;
    } else {
      if (latencies_.empty()) first_send_ = sent_at_;
      last_reply_ = now;
      latencies_.push_back(
          std::chrono::duration_cast<std::chrono::nanoseconds>(now - sent_at_).count());
    }
    StepHalfDone();
  }

  void OnDone(const grpc::Status& status) override {
    const absl::Status result =
        bad_reply_ ? absl::InternalError("the server replied to an append without an append reply")
                   : client::ToAbslStatus(status);
    run_.StreamEnded(result, latencies_, std::move(session_id_), first_send_, last_reply_);
    delete this;
  }

 private:
  void StartStep() {
    pending_.store(2, std::memory_order_relaxed);
    sent_at_ = Clock::now();
    this->StartWrite(&request_);
    this->StartRead(&response_);
  }

  // The write or the read of the current step completed; the second to complete moves on.
  void StepHalfDone() {
    if (pending_.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    const StreamLoadOptions& options = run_.options();
    const int64_t sent = static_cast<int64_t>(latencies_.size());
    if ((options.appends_per_stream > 0 && sent >= options.appends_per_stream) ||
        Clock::now() >= run_.deadline()) {
      this->StartWritesDone();
      return;
    }
    v1::AppendRequest* append = Payload(request_).mutable_append();
    append->set_output_mode(options.output_mode);
    FillRandomSequence(options.model, options.tokens_per_append, rng_, *append->mutable_input());
    StartStep();
  }

  LoadRun& run_;
  grpc::ClientContext context_;
  Request request_;
  v1::StreamResponse response_;
  std::atomic<int> pending_{0};
  bool opened_ = false;
  bool bad_reply_ = false;
  std::mt19937_64 rng_;
  std::string session_id_;
  std::vector<int64_t> latencies_;
  Clock::time_point sent_at_;
  Clock::time_point first_send_;
  Clock::time_point last_reply_;
};

template <typename Request>
StreamLoadResult Run(client::AarenClient& client, const StreamLoadOptions& options) {
  LoadRun run(client, options);
  for (int i = 0; i < options.streams; ++i) (new ClosedLoopStream<Request>(run, i))->Start();
  return run.Wait(options.streams);
}

}  // namespace

StreamLoadResult RunStreamLoad(client::AarenClient& client, const StreamLoadOptions& options) {
  return options.echo ? Run<v1::EchoRequest>(client, options)
                      : Run<v1::StreamRequest>(client, options);
}

}  // namespace aaren::cli

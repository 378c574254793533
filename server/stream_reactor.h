// SPDX-License-Identifier: Apache-2.0
// StreamReactor: one Aaren.Stream call. The first message opens a session (attach or create);
// each later message is an append handed to the engine at once, so a client may pipeline up to
// kMaxInFlight appends before reading replies. Replies are written from a queue, in order, one
// write in flight. The first error ends the stream with that status; appends queued behind it
// are dropped, and the session keeps the state of its last successful append. A client that
// goes away mid-stream cancels only its queued appends: the session stays. Self-owning: gRPC's
// OnDone deletes it, and Finish is called only once no engine callback is outstanding.
#ifndef AAREN_SERVER_STREAM_REACTOR_H_
#define AAREN_SERVER_STREAM_REACTOR_H_

#include <grpcpp/support/server_callback.h>

#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <string>

#include "aaren/v1/aaren.pb.h"
#include "absl/status/status.h"
#include "engine/engine.h"
#include "server/metrics/server_metrics.h"

namespace aaren {

class StreamReactor : public grpc::ServerBidiReactor<v1::StreamRequest, v1::StreamResponse> {
 public:
  static constexpr int kMaxInFlight = 64;

  // `metrics` may be null. `default_mca`: for appends that do not enable MCA.
  StreamReactor(Engine* engine, ServerMetrics* metrics, McaOptions default_mca);

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override { delete this; }

 private:
  void HandleOpen(const v1::OpenSession& open);
  void HandleAppend(v1::AppendRequest& append);
  void OnAppendDone(absl::StatusOr<AppendResult> result);
  // Under mu_: starts the next write, or Finish once nothing is outstanding.
  void PumpLocked();
  void FailLocked(absl::Status status);

  Engine* engine_;
  ServerMetrics* metrics_;
  const McaOptions default_mca_;
  std::chrono::steady_clock::time_point start_;
  std::shared_ptr<CancelFlag> cancel_;
  v1::StreamRequest request_;

  std::mutex mu_;
  std::string session_id_;  // empty until opened
  std::deque<v1::StreamResponse> replies_;
  int in_flight_ = 0;     // appends handed to the engine, not yet answered
  bool reading_ = false;  // a read is outstanding
  bool read_paused_ = false;
  bool reads_done_ = false;  // the client half-closed (or the call broke)
  bool writing_ = false;
  bool finished_ = false;
  bool cancelled_ = false;  // the call was cancelled or a write failed: write nothing more
  absl::Status error_;
};

}  // namespace aaren

#endif  // AAREN_SERVER_STREAM_REACTOR_H_

// SPDX-License-Identifier: Apache-2.0
// Closed-loop streaming load for `aaren-cli bench --mode stream|echo`: N concurrent bidi streams,
// each on its own session, each sending one append, waiting for its reply, then sending the next.
// Every stream is a self-owning gRPC callback reactor (grpc::ClientBidiReactor), so thousands of
// streams cost no threads: gRPC's callback threads run every reaction, and a reaction only
// records a sample and starts the next write and read.
#ifndef AAREN_CLIENT_CLI_BENCH_STREAMS_H_
#define AAREN_CLIENT_CLI_BENCH_STREAMS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "aaren/v1/aaren.pb.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/aaren_client.h"

namespace aaren::cli {

struct StreamLoadOptions {
  // BenchEcho.Echo (no model work, same message sizes) instead of Aaren.Stream.
  bool echo = false;
  int streams = 1;
  // Appends per stream; 0: until `duration`. With both, whichever ends first.
  int64_t appends_per_stream = 1000;
  absl::Duration duration = absl::ZeroDuration();
  int64_t tokens_per_append = 1;
  v1::ModelInfo model;  // inputs are random tokens/features for this model
  v1::OutputMode output_mode = v1::OUTPUT_MODE_ALL;
  uint32_t idle_ttl_seconds = 0;  // of the sessions the streams create
  uint64_t seed = 1;              // stream i draws its inputs from seed and i
};

struct StreamLoadResult {
  std::vector<int64_t> latencies_ns;  // one per append: write started to reply received
  int64_t appends = 0;
  double seconds = 0;  // first append sent to last reply received, over all streams
  std::vector<std::string> session_ids;  // sessions the server created (Aaren.Stream only)
  int64_t failed_streams = 0;
  absl::Status first_error;  // of the first failed stream
};

// Runs the load and returns when every stream has ended. The streams' opens (session creation)
// are not timed. Thread-safe with respect to other calls on `client`.
StreamLoadResult RunStreamLoad(client::AarenClient& client, const StreamLoadOptions& options);

}  // namespace aaren::cli

#endif  // AAREN_CLIENT_CLI_BENCH_STREAMS_H_

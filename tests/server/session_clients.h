// SPDX-License-Identifier: Apache-2.0
// Clients that check durable sessions end to end (server_durability_test, server_replicas_test):
// streams of conditional appends that run until the server goes away, recording what they were
// told was applied, and the check that a session continues after a restart or a failover with
// nothing acknowledged lost or doubled (float64 oracle over exactly the acknowledged history).
// Every call sends metadata aaren-session-id, so the same clients work through a proxy.
//
// Thread-safety: one ClientView per thread.
#ifndef AAREN_TESTS_SERVER_SESSION_CLIENTS_H_
#define AAREN_TESTS_SERVER_SESSION_CLIENTS_H_

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "core/model.h"
#include "grpcpp/channel.h"
#include "tests/server/e2e_support.h"

namespace aaren::testing {

// The model the clients use (the demo language model) and the oracle tolerance.
inline constexpr char kSessionClientModel[] = "demo-lm";
inline constexpr double kSessionClientTolerance = 1e-4;

// What one client knows of its session: the tokens it was told were applied, and the append it
// sent but got no reply for.
struct ClientView {
  std::string id;
  std::vector<int32_t> acked;    // acknowledged history
  std::vector<int32_t> last;     // the last acknowledged append's tokens
  std::vector<int32_t> pending;  // sent, no reply (empty: none)
  int64_t replies = 0;
  bool opened = false;  // a Stream open succeeded once (the session exists)
  // How each of its streams that broke ended (status code -> count); the clean end at `stop`
  // is not counted.
  std::map<grpc::StatusCode, int> breaks;
  std::string odd_break;  // the last break that was not UNAVAILABLE, with its message
};

v1::Sequence Tokens(const std::vector<int32_t>& t);
std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b);

// Bounds on one StreamUntilBroken call, for tests that pick the moment of a fault by progress
// rather than by the clock (a fast server would otherwise grow histories, and the quadratic
// oracle's cost, without bound).
struct StreamLimits {
  // After this many acknowledged appends the client sends no more and waits for `stop` (the
  // stream stays open); <= 0: no limit.
  int64_t max_appends = 0;
  // Incremented once per acknowledged append (shared by the clients of a round); may be null.
  std::atomic<int64_t>* acknowledged = nullptr;
};

// Opens a Stream on `channel` (creating the session when missing) and appends 1-3 random tokens
// at a time, each with expected_position, until `stop` or the stream breaks.
void StreamUntilBroken(const std::shared_ptr<grpc::Channel>& channel, ClientView& view,
                       int32_t vocab, uint64_t seed, std::atomic<bool>& stop,
                       const StreamLimits& limits = {});

// A unary conditional append (the test fails on an error).
v1::AppendResponse UnaryAppend(AarenStub& stub, const std::string& id,
                               const std::vector<int32_t>& tokens, int64_t expected,
                               v1::OutputMode mode = v1::OUTPUT_MODE_LAST);
// The session's position (-1 and a test failure on an error).
int64_t PositionOf(AarenStub& stub, const std::string& id);

// After a restart or failover: the session is at the acknowledged position or one append past
// it (the append whose reply was lost); a retry replays; continuing matches the oracle over
// exactly the acknowledged history (plus the retried append). Updates `view`.
void CheckContinues(AarenStub& stub, const Model& model, ClientView& view, std::mt19937_64& rng);

}  // namespace aaren::testing

#endif  // AAREN_TESTS_SERVER_SESSION_CLIENTS_H_

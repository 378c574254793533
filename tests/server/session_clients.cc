// SPDX-License-Identifier: Apache-2.0
#include "tests/server/session_clients.h"

#include <gtest/gtest.h>

#include <chrono>
#include <random>
#include <thread>

#include "client/session_routing.h"
#include "grpcpp/client_context.h"

namespace aaren::testing {

v1::Sequence Tokens(const std::vector<int32_t>& t) {
  v1::Sequence s;
  s.mutable_tokens()->Add(t.begin(), t.end());
  return s;
}

std::vector<int32_t> Concat(std::vector<int32_t> a, const std::vector<int32_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Streams appends of 1-3 tokens (each with expected_position) until the stream breaks.
void StreamUntilBroken(const std::shared_ptr<grpc::Channel>& channel, ClientView& view,
                       int32_t vocab, uint64_t seed, std::atomic<bool>& stop,
                       const StreamLimits& limits) {
  auto stub = v1::Aaren::NewStub(channel);
  StreamClient stream(*stub, std::chrono::seconds(60), view.id);
  v1::OpenSession open;
  open.set_session_id(view.id);
  open.set_model(kSessionClientModel);
  open.set_create_if_missing(true);
  if (!stream.Open(open)) {
    {
      const grpc::Status st = stream.FinishBroken();
      ++view.breaks[st.error_code()];
      if (st.error_code() != grpc::StatusCode::UNAVAILABLE) view.odd_break = StatusString(st);
    }
    return;
  }
  view.opened = true;
  std::mt19937_64 rng(seed);
  int64_t sent = 0;
  while (!stop.load()) {
    if (limits.max_appends > 0 && sent >= limits.max_appends) {
      // Done: hold the stream open (as an idle client would) until the test stops the round.
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    ++sent;
    std::vector<int32_t> tokens(1 + rng() % 3);
    for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % vocab);
    v1::AppendRequest req;
    *req.mutable_input() = Tokens(tokens);
    req.set_expected_position(static_cast<int64_t>(view.acked.size()));
    req.set_output_mode(v1::OUTPUT_MODE_LAST);
    view.pending = tokens;
    std::optional<v1::AppendResponse> r = stream.Append(req);
    if (!r.has_value()) {  // the server went away: `pending` may or may not be applied
      {
        const grpc::Status st = stream.FinishBroken();
        ++view.breaks[st.error_code()];
        if (st.error_code() != grpc::StatusCode::UNAVAILABLE) view.odd_break = StatusString(st);
      }
      return;
    }
    EXPECT_EQ(r->position(), static_cast<int64_t>(view.acked.size() + tokens.size()));
    view.acked = Concat(view.acked, tokens);
    view.last = tokens;
    view.pending.clear();
    ++view.replies;
    if (limits.acknowledged != nullptr) limits.acknowledged->fetch_add(1);
  }
}

v1::AppendResponse UnaryAppend(AarenStub& stub, const std::string& id,
                               const std::vector<int32_t>& tokens, int64_t expected,
                               v1::OutputMode mode) {
  v1::AppendRequest req;
  req.set_session_id(id);
  *req.mutable_input() = Tokens(tokens);
  req.set_expected_position(expected);
  req.set_output_mode(mode);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  client::AddSessionIdMetadata(context, id);
  v1::AppendResponse response;
  grpc::Status st = stub.Append(&context, req, &response);
  EXPECT_TRUE(st.ok()) << id << ": " << StatusString(st);
  return response;
}

int64_t PositionOf(AarenStub& stub, const std::string& id) {
  v1::GetSessionRequest req;
  req.set_session_id(id);
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kCallTimeout);
  client::AddSessionIdMetadata(context, id);
  v1::Session response;
  grpc::Status st = stub.GetSession(&context, req, &response);
  EXPECT_TRUE(st.ok()) << id << ": " << StatusString(st);
  return st.ok() ? response.position() : -1;
}

// After a restart: the session is at the acknowledged position or one append past it (the
// append whose reply was lost); a retry replays; continuing matches the oracle over exactly the
// acknowledged history (plus the retried append).
void CheckContinues(AarenStub& stub, const Model& model, ClientView& view, std::mt19937_64& rng) {
  const int64_t acked = static_cast<int64_t>(view.acked.size());
  const int64_t position = PositionOf(stub, view.id);
  ASSERT_GE(position, acked) << view.id << ": an acknowledged append was lost";
  if (position != acked) {
    ASSERT_FALSE(view.pending.empty()) << view.id;
    ASSERT_EQ(position, acked + static_cast<int64_t>(view.pending.size()))
        << view.id << ": neither the acknowledged position nor one append past it";
    // The retry of the append whose reply was lost replays it.
    v1::AppendResponse r = UnaryAppend(stub, view.id, view.pending, acked);
    EXPECT_TRUE(r.replayed()) << view.id;
    view.acked = Concat(view.acked, view.pending);
  } else if (!view.last.empty()) {
    // The retry of the last acknowledged append replays it.
    v1::AppendResponse r =
        UnaryAppend(stub, view.id, view.last, acked - static_cast<int64_t>(view.last.size()));
    EXPECT_TRUE(r.replayed()) << view.id;
    EXPECT_EQ(r.position(), acked) << view.id;
  }
  view.pending.clear();
  std::vector<int32_t> more(3);
  for (int32_t& t : more) t = static_cast<int32_t>(rng() % model.config().vocab_size);
  // OUTPUT_MODE_LAST like the streams' appends, so that a retry of this one (as the last
  // acknowledged append, by the next check) matches it and replays.
  v1::AppendResponse r = UnaryAppend(stub, view.id, more, static_cast<int64_t>(view.acked.size()),
                                     v1::OUTPUT_MODE_LAST);
  EXPECT_FALSE(r.replayed());
  const std::vector<int32_t> whole = Concat(view.acked, more);
  const std::vector<double> oracle = OracleOutputs(model, Tokens(whole));
  const int64_t od = model.config().output_dim;
  std::vector<double> tail(oracle.end() - od, oracle.end());
  EXPECT_LT(RelativeError(ToVector(r.outputs()), tail), kSessionClientTolerance) << view.id;
  view.acked = whole;
  view.last = more;
}

}  // namespace aaren::testing

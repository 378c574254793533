// SPDX-License-Identifier: Apache-2.0
// Tests of client/aaren_client.h and client/unary_batch.h against a scripted in-process service
// (fake_aaren_service.h): one method per RPC, the server's status unchanged, deadlines, the
// aaren-session-id routing metadata of each call, and the *Many methods' ordering, in-flight
// bound and first-error behaviour.
#include "client/aaren_client.h"

#include <grpcpp/create_channel.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "tests/client/fake_aaren_service.h"

namespace aaren::client {
namespace {

using ::aaren::testing::FakeAarenService;
using ::testing::Each;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Pair;
using ::testing::SizeIs;
using ::testing::UnorderedElementsAre;

class AarenClientTest : public ::testing::Test {
 protected:
  AarenClientTest() : client_(server_.InProcessChannel()) {}

  aaren::testing::FakeServer server_;
  AarenClient client_;
};

v1::ScoreRequest ScoreCall(size_t i) {
  v1::ScoreRequest request;
  request.set_model("demo-lm");
  request.add_sequences()->add_tokens(static_cast<int32_t>(i));
  return request;
}

TEST_F(AarenClientTest, ListAndGetModels) {
  absl::StatusOr<v1::ListModelsResponse> models = client_.ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  ASSERT_EQ(models->models_size(), 2);
  absl::StatusOr<v1::ModelInfo> ts = client_.GetModel("demo-ts");
  ASSERT_TRUE(ts.ok()) << ts.status();
  EXPECT_EQ(ts->n_features(), 8u);
}

TEST_F(AarenClientTest, GetModelOfAnUnservedNameListsTheServedOnes) {
  absl::StatusOr<v1::ModelInfo> model = client_.GetModel("demo-xx");
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(model.status().message(),
              HasSubstr("model 'demo-xx' is not served (served: demo-lm, demo-ts)"));
}

TEST_F(AarenClientTest, EveryServerCodeAndMessageReachTheCaller) {
  for (int code = 1; code <= 16; ++code) {
    v1::AppendRequest request;
    request.set_session_id("status:" + std::to_string(code));
    request.mutable_input()->add_tokens(1);
    absl::StatusOr<v1::AppendResponse> response = client_.Append(request);
    EXPECT_EQ(static_cast<int>(response.status().code()), code);
    EXPECT_EQ(response.status().message(), "append status " + std::to_string(code));
  }
}

TEST_F(AarenClientTest, SessionMethods) {
  v1::CreateSessionRequest create;
  create.set_model("demo-lm");
  create.set_session_id("mine");
  create.mutable_prefix()->add_tokens(3);
  absl::StatusOr<v1::Session> created = client_.CreateSession(create);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(created->session_id(), "mine");
  EXPECT_EQ(created->position(), 1);

  absl::StatusOr<v1::Session> got = client_.GetSession("s1");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->position(), 5);
  EXPECT_EQ(client_.GetSession("nope").status(), absl::NotFoundError("session 'nope' not found"));

  v1::ForkSessionRequest fork;
  fork.set_session_id("s1");
  absl::StatusOr<v1::Session> forked = client_.ForkSession(fork);
  ASSERT_TRUE(forked.ok()) << forked.status();
  EXPECT_EQ(forked->session_id(), "s1-fork");

  absl::StatusOr<v1::SessionSnapshot> snapshot = client_.ExportSession("s1");
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(snapshot->position(), 5);
  EXPECT_EQ(snapshot->state().size(), 8u);
  EXPECT_EQ(snapshot->config_hash(), "s1");  // the fake echoes the exported id there

  v1::ImportSessionRequest import;
  *import.mutable_snapshot() = *snapshot;
  import.set_session_id("copy");
  absl::StatusOr<v1::Session> imported = client_.ImportSession(import);
  ASSERT_TRUE(imported.ok()) << imported.status();
  EXPECT_EQ(imported->session_id(), "copy");
  EXPECT_EQ(imported->position(), 5);

  EXPECT_TRUE(client_.DeleteSession("copy").ok());
  EXPECT_EQ(client_.DeleteSession("missing").code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(server_.service().deleted(), ElementsAre("copy"));
}

TEST_F(AarenClientTest, HealthOfTheWholeServerAndOfAnUnknownService) {
  absl::StatusOr<grpc::health::v1::HealthCheckResponse> health = client_.Health();
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(health->status(), grpc::health::v1::HealthCheckResponse::SERVING);
  EXPECT_EQ(client_.Health("no.such.Service").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(AarenClientTest, GenerateDeliversTokensInOrder) {
  v1::GenerateRequest request;
  request.set_session_id("s1");
  request.set_max_tokens(50);
  std::vector<int64_t> positions;
  absl::Status status = client_.Generate(
      request, [&](const v1::GenerateResponse& token) { positions.push_back(token.position()); });
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_THAT(positions, SizeIs(50));
  for (int i = 0; i < 50; ++i) EXPECT_EQ(positions[i], i + 1);

  absl::StatusOr<std::vector<v1::GenerateResponse>> all = client_.Generate(request);
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 50u);
  EXPECT_EQ((*all)[44].token(), 1);  // 44 % 43
}

TEST_F(AarenClientTest, GenerateKeepsTokensDeliveredBeforeAnError) {
  v1::GenerateRequest request;
  request.set_session_id("fail-after-3");
  request.set_max_tokens(10);
  int delivered = 0;
  const absl::Status status =
      client_.Generate(request, [&](const v1::GenerateResponse&) { ++delivered; });
  EXPECT_EQ(status, absl::ResourceExhaustedError("generation stopped"));
  EXPECT_EQ(delivered, 3);
  // The collecting overload returns only the error.
  EXPECT_EQ(client_.Generate(request).status(), absl::ResourceExhaustedError("generation stopped"));
}

TEST_F(AarenClientTest, UnaryTimeoutIsDeadlineExceeded) {
  ClientOptions options;
  options.timeout = absl::Milliseconds(50);
  AarenClient client(server_.InProcessChannel(), options);
  v1::AppendRequest request;
  request.set_session_id("slow");
  const auto start = std::chrono::steady_clock::now();
  EXPECT_EQ(client.Append(request).status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
  // A quick call within the timeout succeeds.
  EXPECT_TRUE(client.ListModels().ok());
}

TEST_F(AarenClientTest, StringTargetConnectsOverTcp) {
  AarenClient client(server_.address());
  absl::StatusOr<v1::ListModelsResponse> models = client.ListModels();
  ASSERT_TRUE(models.ok()) << models.status();
  EXPECT_EQ(models->models_size(), 2);
  EXPECT_EQ(client.options().max_message_bytes, 64 << 20);
}

TEST(AarenClientUnreachableTest, CallsFailAsUnavailable) {
  AarenClient client("127.0.0.1:1");  // nothing listens on port 1
  EXPECT_EQ(client.ListModels().status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client.Health().status().code(), absl::StatusCode::kUnavailable);
  v1::GenerateRequest generate;
  generate.set_session_id("s");
  EXPECT_EQ(client.Generate(generate).status().code(), absl::StatusCode::kUnavailable);
  const absl::Status many = client.ScoreMany(
      3, 2, ScoreCall, [](size_t, v1::ScoreResponse&) { return absl::OkStatus(); });
  EXPECT_EQ(many.code(), absl::StatusCode::kUnavailable);
}

TEST(MakeChannelArgumentsTest, SetsBothMessageLimits) {
  ClientOptions options;
  options.max_message_bytes = 12345;
  const grpc::ChannelArguments arguments = MakeChannelArguments(options);
  const grpc_channel_args args = arguments.c_channel_args();  // points into `arguments`
  int found = 0;
  for (size_t i = 0; i < args.num_args; ++i) {
    const std::string key = args.args[i].key;
    if (key == GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH || key == GRPC_ARG_MAX_SEND_MESSAGE_LENGTH) {
      EXPECT_EQ(args.args[i].value.integer, 12345) << key;
      ++found;
    }
  }
  EXPECT_EQ(found, 2);
}

// ---- The *Many methods (client/unary_batch.h) ----

TEST_F(AarenClientTest, ScoreManyHandsResponsesOverInOrder) {
  for (int max_in_flight : {1, 3, 8}) {
    std::vector<int64_t> order;
    std::vector<int64_t> latencies;
    const absl::Status status = client_.ScoreMany(
        40, max_in_flight, ScoreCall,
        [&](size_t i, v1::ScoreResponse& response) {
          EXPECT_EQ(response.results(0).position(), static_cast<int64_t>(i));
          order.push_back(static_cast<int64_t>(i));
          return absl::OkStatus();
        },
        &latencies);
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_THAT(order, SizeIs(40));
    for (int64_t i = 0; i < 40; ++i) EXPECT_EQ(order[i], i);
    EXPECT_THAT(latencies, SizeIs(40));
    for (int64_t ns : latencies) EXPECT_GT(ns, 0);
  }
  EXPECT_EQ(server_.service().score_calls(), 120);
}

TEST_F(AarenClientTest, ScoreManyKeepsAtMostMaxInFlight) {
  const absl::Status status = client_.ScoreMany(
      60, 3, ScoreCall, [](size_t, v1::ScoreResponse&) { return absl::OkStatus(); });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_LE(server_.service().score_peak_in_flight(), 3);
  EXPECT_GE(server_.service().score_peak_in_flight(), 1);
}

TEST_F(AarenClientTest, ScoreManyZeroInFlightMeansOne) {
  const absl::Status status = client_.ScoreMany(
      10, 0, ScoreCall, [](size_t, v1::ScoreResponse&) { return absl::OkStatus(); });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(server_.service().score_peak_in_flight(), 1);
}

TEST_F(AarenClientTest, ScoreManyOfNothingCallsNothing) {
  bool called = false;
  const absl::Status status = client_.ScoreMany(
      0, 4,
      [&](size_t i) {
        called = true;
        return ScoreCall(i);
      },
      [&](size_t, v1::ScoreResponse&) {
        called = true;
        return absl::OkStatus();
      });
  EXPECT_TRUE(status.ok());
  EXPECT_FALSE(called);
  EXPECT_EQ(server_.service().score_calls(), 0);
}

TEST_F(AarenClientTest, ScoreManyStopsAtTheFirstFailedCall) {
  server_.service().set_fail_index(5);
  std::vector<size_t> handed;
  const absl::Status status =
      client_.ScoreMany(100, 4, ScoreCall, [&](size_t i, v1::ScoreResponse&) {
        handed.push_back(i);
        return absl::OkStatus();
      });
  EXPECT_EQ(status, absl::InvalidArgumentError("score 5 rejected"));
  EXPECT_THAT(handed, ElementsAre(0, 1, 2, 3, 4));
  // Calls 5..8 may have started before call 5 was handed over; nothing later.
  EXPECT_LE(server_.service().score_calls(), 9);
}

TEST_F(AarenClientTest, ScoreManyStopsAtTheFirstCallbackError) {
  std::vector<size_t> handed;
  const absl::Status status =
      client_.ScoreMany(100, 2, ScoreCall, [&](size_t i, v1::ScoreResponse&) {
        handed.push_back(i);
        return i == 3 ? absl::DataLossError("disk full") : absl::OkStatus();
      });
  EXPECT_EQ(status, absl::DataLossError("disk full"));
  EXPECT_THAT(handed, ElementsAre(0, 1, 2, 3));
  EXPECT_LE(server_.service().score_calls(), 5);
}

TEST_F(AarenClientTest, CreateAndDeleteSessionMany) {
  std::vector<std::string> ids;
  absl::Status status = client_.CreateSessionMany(
      20, 5,
      [](size_t i) {
        v1::CreateSessionRequest request;
        request.set_model("demo-lm");
        request.set_session_id("batch-" + std::to_string(i));
        return request;
      },
      [&](size_t i, v1::Session& session) {
        EXPECT_EQ(session.session_id(), "batch-" + std::to_string(i));
        ids.push_back(session.session_id());
        return absl::OkStatus();
      });
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_THAT(ids, SizeIs(20));

  std::vector<int64_t> latencies;
  status = client_.DeleteSessionMany(ids, 4, &latencies);
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_THAT(latencies, SizeIs(20));
  std::vector<std::string> deleted = server_.service().deleted();
  std::sort(deleted.begin(), deleted.end());
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(deleted, ids);
}

TEST_F(AarenClientTest, CreateSessionManyReportsTheServersError) {
  const absl::Status status = client_.CreateSessionMany(
      3, 2,
      [](size_t) {
        v1::CreateSessionRequest request;
        request.set_model("none");
        return request;
      },
      [](size_t, v1::Session&) { return absl::OkStatus(); });
  EXPECT_EQ(status, absl::NotFoundError("model 'none' is not served"));
}

TEST_F(AarenClientTest, DeleteSessionManyStopsAtAMissingSession) {
  const absl::Status status = client_.DeleteSessionMany({"a", "missing", "c"}, 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(server_.service().deleted(), UnorderedElementsAre("a"));
}

// ---- Routing metadata (client/session_routing.h) ----

TEST_F(AarenClientTest, EverySessionCallCarriesItsSessionIdAsRoutingMetadata) {
  constexpr const char* kNone = FakeAarenService::kNoHeader;
  ASSERT_TRUE(client_.ListModels().ok());
  ASSERT_TRUE(client_.Score(ScoreCall(1)).ok());
  v1::CreateSessionRequest create;
  create.set_model("demo-lm");
  ASSERT_TRUE(client_.CreateSession(create).ok());  // server-made id: unknown, no header
  create.set_session_id("mine");
  ASSERT_TRUE(client_.CreateSession(create).ok());
  v1::AppendRequest append;
  append.set_session_id("mine");
  append.mutable_input()->add_tokens(1);
  ASSERT_TRUE(client_.Append(append).ok());
  ASSERT_TRUE(client_.GetSession("s1").ok());
  v1::ForkSessionRequest fork;
  fork.set_session_id("s1");
  fork.set_new_session_id("s1-copy");
  ASSERT_TRUE(client_.ForkSession(fork).ok());  // routed by the source
  absl::StatusOr<v1::SessionSnapshot> snapshot = client_.ExportSession("s1");
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  v1::ImportSessionRequest import;
  *import.mutable_snapshot() = *snapshot;
  ASSERT_TRUE(client_.ImportSession(import).ok());  // server-made id: no header
  import.set_session_id("imported-here");
  ASSERT_TRUE(client_.ImportSession(import).ok());
  v1::GenerateRequest generate;
  generate.set_session_id("mine");
  generate.set_max_tokens(2);
  ASSERT_TRUE(client_.Generate(generate).ok());
  ASSERT_TRUE(client_.DeleteSession("s1-copy").ok());
  EXPECT_EQ(client_.GetSession("nope").status().code(), absl::StatusCode::kNotFound);

  EXPECT_THAT(
      server_.service().routing_headers(),
      ElementsAre(Pair("ListModels", kNone), Pair("Score", kNone), Pair("CreateSession", kNone),
                  Pair("CreateSession", "mine"), Pair("Append", "mine"), Pair("GetSession", "s1"),
                  Pair("ForkSession", "s1"), Pair("ExportSession", "s1"),
                  Pair("ImportSession", kNone), Pair("ImportSession", "imported-here"),
                  Pair("Generate", "mine"), Pair("DeleteSession", "s1-copy"),
                  Pair("GetSession", "nope")));
}

TEST_F(AarenClientTest, RoutingMetadataGoesWithTheToken) {
  ClientOptions options;
  options.token = "secret-token";
  AarenClient client(server_.InProcessChannel(), options);
  ASSERT_TRUE(client.GetSession("s1").ok());
  EXPECT_THAT(server_.service().RoutingHeaders("GetSession"), ElementsAre("s1"));
}

TEST_F(AarenClientTest, AnIdThatIsNoLegalHeaderValueIsSentWithoutOne) {
  // The server judges such an id (here the fake accepts it); the client must not fail the call
  // on its own because the id cannot be a metadata value.
  v1::AppendRequest append;
  append.set_session_id("bad\nid");
  append.mutable_input()->add_tokens(1);
  absl::StatusOr<v1::AppendResponse> response = client_.Append(append);
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->session_id(), "bad\nid");
  append.set_session_id(std::string(129, 'x'));
  EXPECT_TRUE(client_.Append(append).ok());
  EXPECT_THAT(server_.service().RoutingHeaders("Append"), Each(FakeAarenService::kNoHeader));
  EXPECT_THAT(server_.service().RoutingHeaders("Append"), SizeIs(2));
}

TEST_F(AarenClientTest, ManyCallsCarryEachRequestsSessionId) {
  std::vector<std::string> ids;
  ASSERT_TRUE(client_
                  .CreateSessionMany(
                      4, 2,
                      [](size_t i) {
                        v1::CreateSessionRequest request;
                        request.set_model("demo-lm");
                        request.set_session_id("many-" + std::to_string(i));
                        return request;
                      },
                      [&](size_t, v1::Session& session) {
                        ids.push_back(session.session_id());
                        return absl::OkStatus();
                      })
                  .ok());
  ASSERT_TRUE(client_.DeleteSessionMany(ids, 2).ok());
  ASSERT_TRUE(
      client_
          .ScoreMany(2, 2, ScoreCall, [](size_t, v1::ScoreResponse&) { return absl::OkStatus(); })
          .ok());
  EXPECT_THAT(server_.service().RoutingHeaders("CreateSession"),
              UnorderedElementsAre("many-0", "many-1", "many-2", "many-3"));
  EXPECT_THAT(server_.service().RoutingHeaders("DeleteSession"),
              UnorderedElementsAre("many-0", "many-1", "many-2", "many-3"));
  EXPECT_THAT(server_.service().RoutingHeaders("Score"),
              ElementsAre(FakeAarenService::kNoHeader, FakeAarenService::kNoHeader));
}

}  // namespace
}  // namespace aaren::client

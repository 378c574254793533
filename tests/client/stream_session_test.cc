// SPDX-License-Identifier: Apache-2.0
// Tests of client/stream_session.h against a scripted in-process service (fake_aaren_service.h):
// open, one-at-a-time and pipelined appends, Send/Receive, how an error ends the stream, and the
// aaren-session-id routing metadata the call starts with.
#include "client/stream_session.h"

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/status/status.h"
#include "tests/client/fake_aaren_service.h"

namespace aaren::client {
namespace {

using ::aaren::testing::FakeAarenService;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::SizeIs;

class StreamSessionTest : public ::testing::Test {
 protected:
  // Over loopback TCP: the in-process transport does not buffer messages, so a Send waits for
  // the server to read it while the server waits to hand over the previous reply; only a real
  // transport's flow-control window lets several sends go unanswered.
  StreamSessionTest() : client_(server_.address()) {}

  // Opens a new session of demo-lm on `stream`.
  static void OpenNew(StreamSession& stream) {
    v1::OpenSession open;
    open.set_model("demo-lm");
    absl::StatusOr<v1::Session> session = stream.Open(open);
    ASSERT_TRUE(session.ok()) << session.status();
  }

  aaren::testing::FakeServer server_;
  AarenClient client_;
};

v1::AppendRequest Tokens(std::vector<int32_t> tokens) {
  v1::AppendRequest request;
  request.mutable_input()->mutable_tokens()->Add(tokens.begin(), tokens.end());
  return request;
}

TEST_F(StreamSessionTest, OpenAppendClose) {
  StreamSession stream(client_);
  v1::OpenSession open;
  open.set_model("demo-lm");
  absl::StatusOr<v1::Session> session = stream.Open(open);
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_EQ(session->session_id(), "stream-1");
  EXPECT_EQ(stream.session().session_id(), "stream-1");
  EXPECT_EQ(stream.session().model(), "demo-lm");

  absl::StatusOr<v1::AppendResponse> first = stream.Append(Tokens({3, 1, 4}));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_THAT(first->outputs(), ElementsAre(3.0f, 1.0f, 4.0f));
  EXPECT_EQ(first->position(), 3);
  absl::StatusOr<v1::AppendResponse> second = stream.Append(Tokens({1}));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->position(), 4);
  EXPECT_EQ(stream.session().position(), 0);  // as of the open

  EXPECT_TRUE(stream.Close().ok());
  // A closed stream cannot be used; closing again repeats the final status.
  EXPECT_EQ(stream.Append(Tokens({1})).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(stream.Close().ok());
}

TEST_F(StreamSessionTest, UseBeforeOpenIsAFailedPrecondition) {
  StreamSession stream(client_);
  EXPECT_EQ(stream.Append(Tokens({1})).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(stream.Send(Tokens({1})).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(stream.Receive().status().code(), absl::StatusCode::kFailedPrecondition);
  const std::vector<v1::AppendRequest> requests = {Tokens({1})};
  EXPECT_EQ(stream.AppendPipelined(requests, [](const v1::AppendResponse&) {}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(stream.Close().ok());  // nothing to close
}

TEST_F(StreamSessionTest, OpenTwiceIsAFailedPrecondition) {
  StreamSession stream(client_);
  ASSERT_NO_FATAL_FAILURE(OpenNew(stream));
  v1::OpenSession open;
  open.set_model("demo-lm");
  EXPECT_EQ(stream.Open(open).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(stream.Append(Tokens({2})).ok());  // the first open still works
  EXPECT_TRUE(stream.Close().ok());
}

TEST_F(StreamSessionTest, OpenErrorIsTheServersStatus) {
  StreamSession stream(client_);
  v1::OpenSession open;
  open.set_session_id("missing");
  EXPECT_EQ(stream.Open(open).status(), absl::NotFoundError("session 'missing' not found"));
  // The stream is over; every call repeats the error.
  EXPECT_EQ(stream.Append(Tokens({1})).status(),
            absl::NotFoundError("session 'missing' not found"));
  EXPECT_EQ(stream.Close(), absl::NotFoundError("session 'missing' not found"));

  StreamSession create(client_);
  open.set_create_if_missing(true);
  absl::StatusOr<v1::Session> session = create.Open(open);
  ASSERT_TRUE(session.ok()) << session.status();
  EXPECT_EQ(session->session_id(), "missing");
}

TEST_F(StreamSessionTest, AnErrorEndsTheStreamAndSticks) {
  StreamSession stream(client_);
  ASSERT_NO_FATAL_FAILURE(OpenNew(stream));
  ASSERT_TRUE(stream.Append(Tokens({1, 2})).ok());
  const absl::Status expected = absl::InvalidArgumentError("negative token at position 2");
  EXPECT_EQ(stream.Append(Tokens({-1})).status(), expected);
  EXPECT_EQ(stream.Append(Tokens({1})).status(), expected);
  EXPECT_EQ(stream.Send(Tokens({1})), expected);
  EXPECT_EQ(stream.Close(), expected);
}

TEST_F(StreamSessionTest, AnUnexpectedReplyTypeIsInternal) {
  StreamSession stream(client_);
  ASSERT_NO_FATAL_FAILURE(OpenNew(stream));
  absl::StatusOr<v1::AppendResponse> reply =
      stream.Append(Tokens({FakeAarenService::kWrongReplyToken}));
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(reply.status().message(), HasSubstr("expected a append reply, got session"));
  EXPECT_EQ(stream.Close().code(), absl::StatusCode::kInternal);
}

TEST_F(StreamSessionTest, AServerThatEndsWithoutReplyingIsInternal) {
  StreamSession stream(client_);
  ASSERT_NO_FATAL_FAILURE(OpenNew(stream));
  absl::StatusOr<v1::AppendResponse> reply =
      stream.Append(Tokens({FakeAarenService::kEndStreamToken}));
  EXPECT_EQ(reply.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(reply.status().message(), HasSubstr("ended the stream before replying"));
}

TEST_F(StreamSessionTest, AppendPipelinedRepliesInOrder) {
  StreamSession stream(client_);
  ASSERT_NO_FATAL_FAILURE(OpenNew(stream));
  std::vector<v1::AppendRequest> requests;
  for (int i = 0; i < 500; ++i) requests.push_back(Tokens({i % 43, (i + 1) % 43}));
  std::vector<int64_t> positions;
  std::vector<float> firsts;
  const absl::Status status = stream.AppendPipelined(requests, [&](const v1::AppendResponse& r) {
    positions.push_back(r.position());
    firsts.push_back(r.outputs(0));
  });
  ASSERT_TRUE(status.ok()) << status;
  ASSERT_THAT(positions, SizeIs(500));
  for (int i = 0; i < 500; ++i) {
    EXPECT_EQ(positions[i], 2 * (i + 1));
    EXPECT_EQ(firsts[i], static_cast<float>(i % 43));
  }
  // The stream stays usable after a pipelined batch.
  absl::StatusOr<v1::AppendResponse> next = stream.Append(Tokens({7}));
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->position(), 1001);
  EXPECT_TRUE(stream.Close().ok());
}

TEST_F(StreamSessionTest, AppendPipelinedDeliversRepliesBeforeAnError) {
  StreamSession stream(client_);
  ASSERT_NO_FATAL_FAILURE(OpenNew(stream));
  std::vector<v1::AppendRequest> requests;
  for (int i = 0; i < 100; ++i) requests.push_back(Tokens({i == 60 ? -5 : 1}));
  int delivered = 0;
  const absl::Status status =
      stream.AppendPipelined(requests, [&](const v1::AppendResponse&) { ++delivered; });
  EXPECT_EQ(status, absl::InvalidArgumentError("negative token at position 60"));
  EXPECT_EQ(delivered, 60);
  EXPECT_EQ(stream.Append(Tokens({1})).status(), status);
  EXPECT_EQ(server_.service().stream_appends(), 61);  // nothing after the failed append is used
}

TEST_F(StreamSessionTest, AppendPipelinedOfNothing) {
  StreamSession stream(client_);
  ASSERT_NO_FATAL_FAILURE(OpenNew(stream));
  int delivered = 0;
  EXPECT_TRUE(stream.AppendPipelined({}, [&](const v1::AppendResponse&) { ++delivered; }).ok());
  EXPECT_EQ(delivered, 0);
  EXPECT_TRUE(stream.Close().ok());
}

TEST_F(StreamSessionTest, SendAndReceivePipelineByHand) {
  StreamSession stream(client_);
  ASSERT_NO_FATAL_FAILURE(OpenNew(stream));
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(stream.Send(Tokens({i})).ok());
  for (int i = 0; i < 8; ++i) {
    absl::StatusOr<v1::AppendResponse> reply = stream.Receive();
    ASSERT_TRUE(reply.ok()) << reply.status();
    EXPECT_EQ(reply->position(), i + 1);
  }
  EXPECT_TRUE(stream.Close().ok());
}

TEST_F(StreamSessionTest, CloseWithAnUnreadReplyIsInternal) {
  StreamSession stream(client_);
  ASSERT_NO_FATAL_FAILURE(OpenNew(stream));
  ASSERT_TRUE(stream.Send(Tokens({1})).ok());
  const absl::Status status = stream.Close();
  EXPECT_EQ(status.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(status.message(), HasSubstr("a reply nobody asked for"));
}

TEST_F(StreamSessionTest, DestroyingAnOpenStreamCancelsIt) {
  {
    StreamSession stream(client_);
    ASSERT_NO_FATAL_FAILURE(OpenNew(stream));
    ASSERT_TRUE(stream.Send(Tokens({1})).ok());
  }
  // The client is still usable afterwards.
  EXPECT_TRUE(client_.ListModels().ok());
}

TEST_F(StreamSessionTest, TheCallCarriesTheOpenedSessionIdAsRoutingMetadata) {
  // Attach to an existing session, create one under a client-chosen id, create one under a
  // server-made id (unknown when the call starts: no header).
  for (const auto& [id, create] :
       {std::pair<std::string, bool>{"s1", false}, std::pair<std::string, bool>{"chosen-id", true},
        std::pair<std::string, bool>{"", false}}) {
    StreamSession stream(client_);
    v1::OpenSession open;
    open.set_model("demo-lm");
    open.set_session_id(id);
    open.set_create_if_missing(create);
    absl::StatusOr<v1::Session> session = stream.Open(open);
    ASSERT_TRUE(session.ok()) << session.status();
    ASSERT_TRUE(stream.Append(Tokens({1, 2})).ok());
    EXPECT_TRUE(stream.Close().ok());
  }
  EXPECT_THAT(server_.service().RoutingHeaders("Stream"),
              ElementsAre("s1", "chosen-id", FakeAarenService::kNoHeader));
}

}  // namespace
}  // namespace aaren::client

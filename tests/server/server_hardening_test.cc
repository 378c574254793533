// SPDX-License-Identifier: Apache-2.0
// Regression tests of the defects found by probing the running server (the hardening issue),
// each against the real binary:
//   1. a Score whose reply cannot fit --max_message_bytes, or with more tokens than
//      --max_request_tokens, is refused before any work;
//   2. a Stream client that writes and never reads holds bounded server memory (reading stops);
//      an unread Generate pauses;
//   3. Generate is capped (--max_generate_tokens); DeleteSession ends a running Generate; queued
//      operations honour their own deadlines;
//   4. calls that fail change nothing (an append whose reply cannot be sent; an append, export
//      or fork past its deadline behind a Generate never runs);
//   5. a malformed frame mid-Stream ends it with INVALID_ARGUMENT;
//   6. a Stream is bound to its session, not the id;
//   7. an unparsable request gets INVALID_ARGUMENT naming its type and is counted;
//   8. an oversized id is refused without being echoed;
//   9. ImportSession refuses states no sequence can produce;
//  10. SIGTERM with an idle connected client exits at once.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/server/e2e_support.h"

namespace aaren::testing {
namespace {

using Code = grpc::StatusCode;
using std::chrono::milliseconds;
using std::chrono::seconds;
constexpr char kLm[] = "demo-lm";
constexpr int kMaxMessageBytes = 8 << 20;
constexpr int kMaxGenerate = 100000;
// Appends a Stream may have applied for a client that reads nothing: the server's bound on
// appends in flight or answered but unsent (StreamReactor::kMaxPending).
constexpr int64_t kStreamBound = 64;

class HardeningTest : public SharedServerTest<HardeningTest> {
 public:
  static ServerFlags Flags() {
    metrics_port_ = FreePort();
    ServerFlags flags;
    flags.model_dirs = {DemoModelDir(kLm).string()};
    flags.extra = {"--threads",
                   "2",
                   "--max_message_bytes",
                   std::to_string(kMaxMessageBytes),
                   "--max_generate_tokens",
                   std::to_string(kMaxGenerate),
                   "--metrics_port",
                   std::to_string(metrics_port_)};
    return flags;
  }

 protected:
  int64_t Position(const std::string& id) {
    v1::GetSessionRequest get;
    get.set_session_id(id);
    auto r = Call(stub(), &AarenStub::GetSession, get);
    EXPECT_TRUE(r.ok()) << StatusString(r.status);
    return r.response.position();
  }
  bool Exists(const std::string& id) {
    v1::GetSessionRequest get;
    get.set_session_id(id);
    return Call(stub(), &AarenStub::GetSession, get).ok();
  }
  double Metric(const std::string& name, const std::string& labels) {
    return MetricValue(ScrapeMetrics(metrics_port_), name, labels);
  }
  // A Generate on `id` that asks for many tokens and never reads: it pauses once the transport's
  // buffers are full (see UnreadGeneratePauses). Cancel it with the context.
  struct Unread {
    std::unique_ptr<AarenStub> stub;
    std::unique_ptr<grpc::ClientContext> context;
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader;
  };
  // The client's HTTP/2 window is what tells the server its tokens are not read: without BDP
  // probing it stays at gRPC's 64 KiB (with it, it grows to megabytes), so generation pauses
  // after some thousand tokens.
  Unread StartUnreadGenerate(const std::string& id) {
    Unread g;
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
    args.SetInt("aaren.test.unread", next_channel_++);
    g.stub = v1::Aaren::NewStub(
        grpc::CreateCustomChannel(server_->address(), grpc::InsecureChannelCredentials(), args));
    g.context = std::make_unique<grpc::ClientContext>();
    v1::GenerateRequest req;
    req.set_session_id(id);
    req.set_max_tokens(kMaxGenerate);
    g.reader = g.stub->Generate(g.context.get(), req);
    // Until it has paused: the position stops moving.
    int64_t last = -1;
    for (int i = 0; i < 100; ++i) {
      std::this_thread::sleep_for(milliseconds(200));
      const int64_t p = Position(id);
      if (p == last && p > 1) break;
      last = p;
    }
    return g;
  }
  static void Stop(Unread& g) {
    g.context->TryCancel();
    v1::GenerateResponse r;
    while (g.reader->Read(&r)) {
    }
    g.reader->Finish();
  }

  static inline int metrics_port_ = 0;
  static inline int next_channel_ = 0;
};

v1::Sequence Tokens(int64_t n) {
  v1::Sequence s;
  for (int64_t i = 0; i < n; ++i) s.add_tokens(static_cast<int32_t>((i * 7 + 3) % 43));
  return s;
}

// ---- 1 ----

TEST_F(HardeningTest, ScoreThatCannotFitItsReplyIsRefusedBeforeWork) {
  const double scored_before = Metric("aaren_tokens_scored_total", "model=\"demo-lm\"");
  v1::ScoreRequest score;
  score.set_model(kLm);
  for (int i = 0; i < 3; ++i) *score.add_sequences() = Tokens(1 << 17);  // 67 MB of outputs
  auto r = Call(stub(), &AarenStub::Score, score);
  EXPECT_TRUE(HasStatus(r.status, Code::RESOURCE_EXHAUSTED, {"--max_message_bytes", "sequences"}));
  // The same request with the last row only fits, and runs.
  score.set_output_mode(v1::OUTPUT_MODE_LAST);
  EXPECT_TRUE(Call(stub(), &AarenStub::Score, score).ok());
  const double scored_after = Metric("aaren_tokens_scored_total", "model=\"demo-lm\"");
  EXPECT_EQ(scored_after - scored_before, 3 << 17) << "only the second call ran";
}

TEST_F(HardeningTest, ScoreWithMoreTokensThanTheRequestLimitIsRefused) {
  v1::ScoreRequest score;
  score.set_model(kLm);
  score.set_output_mode(v1::OUTPUT_MODE_NONE);
  for (int i = 0; i < 4; ++i) *score.add_sequences() = Tokens(1 << 20);  // 4M > 2M tokens
  const double scored_before = Metric("aaren_tokens_scored_total", "model=\"demo-lm\"");
  auto r = Call(stub(), &AarenStub::Score, score);
  EXPECT_TRUE(HasStatus(r.status, Code::INVALID_ARGUMENT,
                        {"--max_request_tokens", "4194304", "sequences"}));
  EXPECT_EQ(Metric("aaren_tokens_scored_total", "model=\"demo-lm\""), scored_before);
}

// ---- 2 ----

TEST_F(HardeningTest, StreamClientThatNeverReadsHoldsBoundedMemory) {
  constexpr int kAppends = 120;
  constexpr int64_t kTokens = 4096;  // each reply: 4096 x 43 x 4 = 704 KB
  grpc::ClientContext ctx;
  auto stream = stub().Stream(&ctx);
  v1::StreamRequest open;
  open.mutable_open()->set_model(kLm);
  ASSERT_TRUE(stream->Write(open));
  v1::StreamResponse reply;
  ASSERT_TRUE(stream->Read(&reply));
  const std::string id = reply.session().session_id();
  const int64_t rss_before = ResidentBytes(server_->pid());
  std::atomic<int> written{0};
  std::thread writer([&] {
    v1::StreamRequest append;
    *append.mutable_append()->mutable_input() = Tokens(kTokens);
    for (int i = 0; i < kAppends && stream->Write(append); ++i) written.fetch_add(1);
    stream->WritesDone();
  });
  // The client reads nothing for a while: the server stops reading it.
  std::this_thread::sleep_for(seconds(4));
  const int64_t position = Position(id);
  const int64_t rss_during = ResidentBytes(server_->pid());
  EXPECT_LE(position, kStreamBound * kTokens) << "the server kept appending for a client that "
                                                 "does not read";
  EXPECT_LT(position, kAppends * kTokens);
  EXPECT_LT(rss_during - rss_before, int64_t{150} << 20)
      << "server memory grew by " << (rss_during - rss_before) / (1 << 20) << " MB";
  // Then it reads: every reply arrives, in order.
  int64_t expect = 0;
  int replies = 0;
  while (stream->Read(&reply)) {
    ASSERT_TRUE(reply.has_append());
    expect += kTokens;
    EXPECT_EQ(reply.append().position(), expect);
    EXPECT_EQ(reply.append().outputs_size(), kTokens * 43);
    ++replies;
  }
  writer.join();
  EXPECT_TRUE(stream->Finish().ok());
  EXPECT_EQ(replies, kAppends);
  EXPECT_EQ(written.load(), kAppends);
}

// Replies without outputs are small, but each queued append holds its input in the engine until
// it runs: input counts toward the stream's bound too. 64 appends of 1M tokens (1 MB on the
// wire, 4 MB decoded) held ~300 MB before.
TEST_F(HardeningTest, StreamAppendsQueuedBehindALongOneHoldBoundedInput) {
  constexpr int kAppends = 64;
  constexpr int64_t kTokens = 1 << 20;
  grpc::ClientContext ctx;
  auto stream = stub().Stream(&ctx);
  v1::StreamRequest open;
  open.mutable_open()->set_model(kLm);
  ASSERT_TRUE(stream->Write(open));
  v1::StreamResponse reply;
  ASSERT_TRUE(stream->Read(&reply));
  const int64_t rss_before = ResidentBytes(server_->pid());
  std::atomic<int> written{0};
  std::thread writer([&] {
    v1::StreamRequest append;
    *append.mutable_append()->mutable_input() = Tokens(kTokens);
    append.mutable_append()->set_output_mode(v1::OUTPUT_MODE_NONE);
    for (int i = 0; i < kAppends && stream->Write(append); ++i) written.fetch_add(1);
  });
  std::this_thread::sleep_for(seconds(3));
  const int64_t rss_during = ResidentBytes(server_->pid());
  EXPECT_LT(written.load(), kAppends) << "the server read every append while the first ran";
  EXPECT_LT(rss_during - rss_before, int64_t{120} << 20)
      << "server memory grew by " << (rss_during - rss_before) / (1 << 20) << " MB";
  ctx.TryCancel();
  writer.join();
  EXPECT_EQ(stream->Finish().error_code(), Code::CANCELLED);
}

TEST_F(HardeningTest, UnreadGeneratePauses) {
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  *create.mutable_prefix() = Tokens(4);
  auto made = Call(stub(), &AarenStub::CreateSession, create);
  ASSERT_TRUE(made.ok());
  const std::string id = made.response.session_id();
  Unread g = StartUnreadGenerate(id);
  const int64_t a = Position(id);
  std::this_thread::sleep_for(seconds(2));
  const int64_t b = Position(id);
  EXPECT_EQ(a, b) << "generation went on for a client that does not read";
  EXPECT_LT(b, 4 + kMaxGenerate);
  Stop(g);
}

// ---- 3 ----

TEST_F(HardeningTest, GenerateIsCapped) {
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  *create.mutable_prefix() = Tokens(2);
  auto made = Call(stub(), &AarenStub::CreateSession, create);
  ASSERT_TRUE(made.ok());
  grpc::ClientContext ctx;
  v1::GenerateRequest req;
  req.set_session_id(made.response.session_id());
  req.set_max_tokens(kMaxGenerate + 1);
  auto reader = stub().Generate(&ctx, req);
  v1::GenerateResponse token;
  EXPECT_FALSE(reader->Read(&token));
  EXPECT_TRUE(
      HasStatus(reader->Finish(), Code::INVALID_ARGUMENT, {"max_tokens", "--max_generate_tokens"}));
  EXPECT_EQ(Position(made.response.session_id()), 2);
}

TEST_F(HardeningTest, DeleteEndsARunningGenerate) {
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  *create.mutable_prefix() = Tokens(3);
  auto made = Call(stub(), &AarenStub::CreateSession, create);
  ASSERT_TRUE(made.ok());
  const std::string id = made.response.session_id();
  Unread g = StartUnreadGenerate(id);
  v1::DeleteSessionRequest del;
  del.set_session_id(id);
  auto deleted = Call(stub(), &AarenStub::DeleteSession, del, seconds(10));
  EXPECT_TRUE(deleted.ok()) << StatusString(deleted.status);
  EXPECT_FALSE(Exists(id));
  v1::GenerateResponse token;
  while (g.reader->Read(&token)) {
  }
  EXPECT_TRUE(HasStatus(g.reader->Finish(), Code::NOT_FOUND, {"deleted"}));
}

TEST_F(HardeningTest, OperationsQueuedBehindAGenerateHonourTheirDeadlinesAndNeverRun) {
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  *create.mutable_prefix() = Tokens(3);
  auto made = Call(stub(), &AarenStub::CreateSession, create);
  ASSERT_TRUE(made.ok());
  const std::string id = made.response.session_id();
  Unread g = StartUnreadGenerate(id);
  v1::AppendRequest append;
  append.set_session_id(id);
  *append.mutable_input() = Tokens(5);
  EXPECT_EQ(Call(stub(), &AarenStub::Append, append, milliseconds(300)).status.error_code(),
            Code::DEADLINE_EXCEEDED);
  v1::ExportSessionRequest exp;
  exp.set_session_id(id);
  EXPECT_EQ(Call(stub(), &AarenStub::ExportSession, exp, milliseconds(300)).status.error_code(),
            Code::DEADLINE_EXCEEDED);
  v1::ForkSessionRequest fork;
  fork.set_session_id(id);
  fork.set_new_session_id(id + "-fork");
  EXPECT_EQ(Call(stub(), &AarenStub::ForkSession, fork, milliseconds(300)).status.error_code(),
            Code::DEADLINE_EXCEEDED);
  // The server's deadline for a call runs from when it received the call, so it ends a little
  // after the client's: an operation the Generate releases inside that gap may still run, and
  // gRPC makes no promise about it (DEADLINE_EXCEEDED means "the outcome is unknown"). What is
  // promised is that an operation whose deadline has passed on the server never starts: so the
  // Generate ends only once every server-side deadline is well past (this gap, a few ms on an
  // idle machine, was ~10 ms under a loaded container build, and the fork ran).
  std::this_thread::sleep_for(milliseconds(500));
  const int64_t generated = Position(id);
  Stop(g);
  std::this_thread::sleep_for(milliseconds(300));
  // None of them ran: the session has no fork, and only Generate's tokens. (A delete does not
  // wait behind a Generate: it ends it, see DeleteEndsARunningGenerate.)
  EXPECT_TRUE(Exists(id));
  EXPECT_FALSE(Exists(id + "-fork"));
  EXPECT_LE(Position(id), generated + 1);  // + the token being appended when cancelled
  EXPECT_GE(Position(id), generated);
}

// ---- 4 ----

TEST_F(HardeningTest, AnAppendWhoseReplyCannotBeSentChangesNothing) {
  const std::string id = CreateSession(stub(), kLm, Tokens(7));
  const std::string before = SnapshotBytes(stub(), id);
  v1::AppendRequest append;
  append.set_session_id(id);
  append.set_expected_position(7);
  *append.mutable_input() = Tokens(100000);        // 17 MB of outputs > 8 MiB
  for (int attempt = 0; attempt < 2; ++attempt) {  // the retry is not a replay either
    auto r = Call(stub(), &AarenStub::Append, append);
    EXPECT_TRUE(HasStatus(r.status, Code::RESOURCE_EXHAUSTED, {"--max_message_bytes", "input"}));
    EXPECT_EQ(SnapshotBytes(stub(), id), before);
  }
  append.set_output_mode(v1::OUTPUT_MODE_LAST);
  auto r = Call(stub(), &AarenStub::Append, append);
  ASSERT_TRUE(r.ok()) << StatusString(r.status);
  EXPECT_EQ(r.response.position(), 100007);
  EXPECT_FALSE(r.response.replayed());
}

// ---- 5 ----

// A bidirectional call of raw frames.
class RawStream {
 public:
  RawStream(std::shared_ptr<grpc::Channel> channel, const std::string& method) : stub_(channel) {
    ctx_.set_deadline(std::chrono::system_clock::now() + seconds(30));
    call_ = stub_.PrepareCall(&ctx_, method, &cq_);
    call_->StartCall(Tag(1));
    Wait(1);
  }
  ~RawStream() {
    cq_.Shutdown();
    void* tag;
    bool ok;
    while (cq_.Next(&tag, &ok)) {
    }
  }
  bool Write(const std::string& bytes) {
    grpc::Slice slice(bytes);
    grpc::ByteBuffer buffer(&slice, 1);
    call_->Write(buffer, Tag(2));
    return Wait(2);
  }
  bool Read(std::string* bytes) {
    grpc::ByteBuffer buffer;
    call_->Read(&buffer, Tag(3));
    if (!Wait(3)) return false;
    std::vector<grpc::Slice> slices;
    (void)buffer.Dump(&slices);
    bytes->clear();
    for (const grpc::Slice& s : slices) bytes->append(s.begin(), s.end());
    return true;
  }
  grpc::Status Finish() {
    grpc::Status status;
    call_->Finish(&status, Tag(4));
    Wait(4);
    return status;
  }

 private:
  static void* Tag(intptr_t i) { return reinterpret_cast<void*>(i); }
  bool Wait(intptr_t want) {
    void* tag;
    bool ok = false;
    while (cq_.Next(&tag, &ok)) {
      if (tag == Tag(want)) return ok;
    }
    return false;
  }
  grpc::GenericStub stub_;
  grpc::ClientContext ctx_;
  grpc::CompletionQueue cq_;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call_;
};

TEST_F(HardeningTest, AMalformedFrameMidStreamIsInvalidArgument) {
  RawStream stream(server_->NewChannel(), "/aaren.v1.Aaren/Stream");
  v1::StreamRequest open;
  open.mutable_open()->set_model(kLm);
  ASSERT_TRUE(stream.Write(open.SerializeAsString()));
  std::string reply;
  ASSERT_TRUE(stream.Read(&reply));
  v1::StreamRequest append;
  *append.mutable_append()->mutable_input() = Tokens(2);
  ASSERT_TRUE(stream.Write(append.SerializeAsString()));
  ASSERT_TRUE(stream.Read(&reply));
  // A length-delimited field whose length runs past the end of the frame.
  ASSERT_TRUE(stream.Write(std::string("\x12\xff\xff\xff\x0f\x01", 6)));
  while (stream.Read(&reply)) {
  }
  EXPECT_TRUE(HasStatus(stream.Finish(), Code::INVALID_ARGUMENT, {"aaren.v1.StreamRequest"}));
}

// A request the stream refuses (unparsable, or invalid before it reaches the engine) ends the
// call, but the appends sent before it still run and are answered first: the client learns what
// was applied. (They used to be cancelled, or applied without a reply, depending on timing.)
TEST_F(HardeningTest, ARefusedRequestMidStreamLetsTheAppendsBeforeItBeAnswered) {
  v1::StreamRequest bad_token;
  bad_token.mutable_append()->mutable_input()->add_tokens(99);  // demo-lm's vocabulary is 43
  const std::vector<std::pair<std::string, std::string>> refusals = {
      {std::string("\x12\xff\xff\xff\x0f\x01", 6), "aaren.v1.StreamRequest"},
      {bad_token.SerializeAsString(), "99"},
  };
  constexpr int64_t kTokens = 30000;
  for (const auto& [frame, named] : refusals) {
    RawStream stream(server_->NewChannel(), "/aaren.v1.Aaren/Stream");
    v1::StreamRequest open;
    open.mutable_open()->set_model(kLm);
    ASSERT_TRUE(stream.Write(open.SerializeAsString()));
    std::string bytes;
    ASSERT_TRUE(stream.Read(&bytes));
    v1::StreamResponse opened;
    ASSERT_TRUE(opened.ParseFromString(bytes));
    const std::string id = opened.session().session_id();
    v1::StreamRequest append;
    *append.mutable_append()->mutable_input() = Tokens(kTokens);
    append.mutable_append()->set_output_mode(v1::OUTPUT_MODE_LAST);
    ASSERT_TRUE(stream.Write(append.SerializeAsString()));
    ASSERT_TRUE(stream.Write(frame));  // while the long append runs
    std::vector<int64_t> positions;
    while (stream.Read(&bytes)) {
      v1::StreamResponse r;
      ASSERT_TRUE(r.ParseFromString(bytes));
      positions.push_back(r.append().position());
    }
    EXPECT_TRUE(HasStatus(stream.Finish(), Code::INVALID_ARGUMENT, {named})) << named;
    EXPECT_EQ(positions, std::vector<int64_t>{kTokens}) << named;
    EXPECT_EQ(Position(id), kTokens) << named;
  }
}

// ---- 6 ----

TEST_F(HardeningTest, AStreamIsBoundToItsSessionNotToTheId) {
  const std::string id = "reborn";
  CreateSession(stub(), kLm, Tokens(3), id);
  StreamClient stream(stub());
  v1::OpenSession open;
  open.set_session_id(id);
  ASSERT_TRUE(stream.Open(open).has_value());
  v1::AppendRequest append;
  *append.mutable_input() = Tokens(1);
  ASSERT_TRUE(stream.Append(append).has_value());
  v1::DeleteSessionRequest del;
  del.set_session_id(id);
  ASSERT_TRUE(Call(stub(), &AarenStub::DeleteSession, del).ok());
  CreateSession(stub(), kLm, {}, id);  // a new session under the old id
  EXPECT_FALSE(stream.Append(append).has_value());
  EXPECT_TRUE(HasStatus(stream.Finish(), Code::NOT_FOUND, {"deleted", id}));
  EXPECT_EQ(Position(id), 0) << "the old stream's append landed in the new session";
}

// ---- 7 ----

TEST_F(HardeningTest, AnUnparsableRequestIsInvalidArgumentAndCounted) {
  const std::string labels = "rpc=\"Score\",code=\"INVALID_ARGUMENT\"";
  const double before = Metric("aaren_requests_total", labels);
  grpc::GenericStub generic(server_->NewChannel());
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + seconds(30));
  const std::string garbage("\x0a\xff\xff\xff\xff\x0f", 6);
  grpc::Slice slice(garbage);
  grpc::ByteBuffer request(&slice, 1), response;
  std::promise<grpc::Status> done;
  generic.UnaryCall(&ctx, "/aaren.v1.Aaren/Score", grpc::StubOptions(), &request, &response,
                    [&](grpc::Status st) { done.set_value(st); });
  const grpc::Status st = done.get_future().get();
  EXPECT_TRUE(HasStatus(st, Code::INVALID_ARGUMENT, {"aaren.v1.ScoreRequest"}));
  EXPECT_EQ(Metric("aaren_requests_total", labels) - before, 1);
  // An unknown method names itself.
  grpc::ClientContext ctx2;
  std::promise<grpc::Status> done2;
  generic.UnaryCall(&ctx2, "/aaren.v1.Aaren/NoSuchMethod", grpc::StubOptions(), &request, &response,
                    [&](grpc::Status s) { done2.set_value(s); });
  EXPECT_TRUE(HasStatus(done2.get_future().get(), Code::UNIMPLEMENTED, {"NoSuchMethod"}));
}

// ---- 8 ----

TEST_F(HardeningTest, AnOversizedIdIsRefusedWithoutBeingEchoed) {
  v1::GetSessionRequest get;
  get.set_session_id(std::string(200 * 1024, 'x'));
  auto r = Call(stub(), &AarenStub::GetSession, get);
  EXPECT_TRUE(HasStatus(r.status, Code::INVALID_ARGUMENT, {"session_id", "128"}));
  EXPECT_LT(r.status.error_message().size(), 200u);
  v1::AppendRequest append;
  append.set_session_id(std::string("bad\x01id", 6));
  *append.mutable_input() = Tokens(1);
  auto a = Call(stub(), &AarenStub::Append, append);
  EXPECT_TRUE(HasStatus(a.status, Code::INVALID_ARGUMENT, {"session_id"}));
  EXPECT_EQ(a.status.error_message().find("bad"), std::string::npos);
}

// ---- 9 ----

TEST_F(HardeningTest, ImportRefusesStatesNoSequenceProduces) {
  const std::string id = CreateSession(stub(), kLm, Tokens(5));
  v1::ExportSessionRequest exp;
  exp.set_session_id(id);
  auto exported = Call(stub(), &AarenStub::ExportSession, exp);
  ASSERT_TRUE(exported.ok());
  const v1::SessionSnapshot good = exported.response.snapshot();
  auto import = [&](const v1::SessionSnapshot& snap) {
    v1::ImportSessionRequest req;
    *req.mutable_snapshot() = snap;
    return Call(stub(), &AarenStub::ImportSession, req);
  };
  auto with_floats = [&](std::initializer_list<std::pair<int, float>> edits) {
    v1::SessionSnapshot s = good;
    std::string state = s.state();
    for (auto [index, value] : edits) std::memcpy(&state[4 * index], &value, 4);
    s.set_state(state);
    return s;
  };
  // Record 0 (layer 0, head 0) is [m, u, w...].
  EXPECT_TRUE(HasStatus(import(with_floats({{0, 1e30f}, {1, 0.0f}})).status, Code::INVALID_ARGUMENT,
                        {"snapshot.state[0]", "layer 0, head 0"}));
  EXPECT_TRUE(HasStatus(import(with_floats({{1, 0.0f}})).status, Code::INVALID_ARGUMENT,
                        {"snapshot.state[1]", "u"}));
  EXPECT_TRUE(HasStatus(import(with_floats({{2, 3e38f}})).status, Code::INVALID_ARGUMENT,
                        {"snapshot.state[2]", "w[0]"}));
  v1::SessionSnapshot far = good;
  far.set_position(int64_t{1} << 62);
  EXPECT_TRUE(HasStatus(import(far).status, Code::INVALID_ARGUMENT, {"snapshot.position"}));
  v1::SessionSnapshot zero = good;  // a state with tokens claimed at position 0
  zero.set_position(0);
  zero.clear_last_output();
  EXPECT_TRUE(HasStatus(import(zero).status, Code::INVALID_ARGUMENT, {"position 0"}));
  // The real one still imports and runs.
  auto ok = import(good);
  ASSERT_TRUE(ok.ok()) << StatusString(ok.status);
  v1::AppendRequest append;
  append.set_session_id(ok.response.session_id());
  *append.mutable_input() = Tokens(3);
  EXPECT_TRUE(Call(stub(), &AarenStub::Append, append).ok());
}

TEST_F(HardeningTest, ImportAcceptsStatesMadeWithMonteCarloAttention) {
  v1::CreateSessionRequest create;
  create.set_model(kLm);
  *create.mutable_prefix() = Tokens(300);
  create.mutable_mca()->set_enabled(true);
  create.mutable_mca()->set_alpha(2.0f);  // few samples per token: the widest values
  auto made = Call(stub(), &AarenStub::CreateSession, create);
  ASSERT_TRUE(made.ok());
  v1::ExportSessionRequest exp;
  exp.set_session_id(made.response.session_id());
  auto exported = Call(stub(), &AarenStub::ExportSession, exp);
  ASSERT_TRUE(exported.ok());
  v1::ImportSessionRequest req;
  *req.mutable_snapshot() = exported.response.snapshot();
  auto r = Call(stub(), &AarenStub::ImportSession, req);
  EXPECT_TRUE(r.ok()) << StatusString(r.status);
}

// ---- 10 ----

TEST(ShutdownTest, SigtermWithAnIdleConnectedClientExitsAtOnce) {
  ServerFlags flags;
  flags.model_dirs = {DemoModelDir(kLm).string()};
  flags.extra = {"--threads", "1", "--drain_timeout", "30s"};
  auto server = ServerProcess::Start(flags);
  ASSERT_TRUE(server.ok()) << server.status();
  auto channel = (*server)->NewChannel();
  auto stub = v1::Aaren::NewStub(channel);
  ASSERT_TRUE(Call(*stub, &AarenStub::ListModels, v1::ListModelsRequest()).ok());
  // The client stays connected and idle.
  const auto t0 = std::chrono::steady_clock::now();
  (*server)->Signal(SIGTERM);
  std::optional<int> status = (*server)->WaitForExit(seconds(30));
  const double elapsed =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  ASSERT_TRUE(status.has_value());
  EXPECT_EQ(DescribeExit(*status), "exit status 0");
  // Nothing was in flight: it must not sit out the drain timeout (was 5 s before the fix).
  EXPECT_LT(elapsed, 3.0) << "SIGTERM to exit took " << elapsed << " s";
}

}  // namespace
}  // namespace aaren::testing

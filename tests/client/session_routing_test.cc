// SPDX-License-Identifier: Apache-2.0
// Tests of client/session_routing.h: which ids become the aaren-session-id header and which
// session each request type names. (That every AarenClient and StreamSession call sends it is
// tested against the fake service in aaren_client_test.cc and stream_session_test.cc.)
#include "client/session_routing.h"

#include <string>

#include <gtest/gtest.h>

namespace aaren::client {
namespace {

TEST(SessionRoutingTest, TheKeyIsTheOneTheProxiesHash) {
  // deploy/nginx hashes $http_aaren_session_id, deploy/envoy the header aaren-session-id.
  EXPECT_STREQ(kSessionIdMetadataKey, "aaren-session-id");
}

TEST(SessionRoutingTest, RoutableIdsAreNonEmptyPrintableAndAtMost128Characters) {
  EXPECT_TRUE(IsRoutableSessionId("s1"));
  EXPECT_TRUE(IsRoutableSessionId("0123456789abcdef0123456789abcdef"));
  EXPECT_TRUE(IsRoutableSessionId("A.b_c-9"));
  EXPECT_TRUE(IsRoutableSessionId(std::string(128, 'x')));
  EXPECT_FALSE(IsRoutableSessionId(""));
  EXPECT_FALSE(IsRoutableSessionId(std::string(129, 'x')));
  EXPECT_FALSE(IsRoutableSessionId("line\nbreak"));
  EXPECT_FALSE(IsRoutableSessionId(std::string("nul\0id", 6)));
  EXPECT_FALSE(IsRoutableSessionId("caf\xc3\xa9"));
}

TEST(SessionRoutingTest, EachRequestNamesItsSession) {
  EXPECT_EQ(SessionIdOf(v1::ListModelsRequest()), "");
  EXPECT_EQ(SessionIdOf(v1::ScoreRequest()), "");
  EXPECT_EQ(SessionIdOf(grpc::health::v1::HealthCheckRequest()), "");
  v1::CreateSessionRequest create;
  EXPECT_EQ(SessionIdOf(create), "");
  create.set_session_id("c");
  EXPECT_EQ(SessionIdOf(create), "c");
  v1::AppendRequest append;
  append.set_session_id("a");
  EXPECT_EQ(SessionIdOf(append), "a");
  v1::GetSessionRequest get;
  get.set_session_id("g");
  EXPECT_EQ(SessionIdOf(get), "g");
  v1::DeleteSessionRequest del;
  del.set_session_id("d");
  EXPECT_EQ(SessionIdOf(del), "d");
  v1::ForkSessionRequest fork;
  fork.set_session_id("source");
  fork.set_new_session_id("target");
  EXPECT_EQ(SessionIdOf(fork), "source");
  v1::ExportSessionRequest export_request;
  export_request.set_session_id("e");
  EXPECT_EQ(SessionIdOf(export_request), "e");
  v1::ImportSessionRequest import;
  import.set_session_id("i");
  EXPECT_EQ(SessionIdOf(import), "i");
  v1::GenerateRequest generate;
  generate.set_session_id("gen");
  EXPECT_EQ(SessionIdOf(generate), "gen");
  v1::OpenSession open;
  EXPECT_EQ(SessionIdOf(open), "");
  open.set_session_id("o");
  EXPECT_EQ(SessionIdOf(open), "o");
}

}  // namespace
}  // namespace aaren::client

// SPDX-License-Identifier: Apache-2.0
// Session ids: server-made ids are 32 lowercase hex digits and unique; client-chosen ids are
// checked against [A-Za-z0-9._-]{1,128} with the request field named in the error.
#include "engine/session_id.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "absl/container/flat_hash_set.h"

namespace aaren {
namespace {

using ::testing::HasSubstr;

TEST(NewSessionIdTest, Is32LowercaseHexDigits) {
  for (int i = 0; i < 100; ++i) {
    const std::string id = NewSessionId();
    ASSERT_EQ(id.size(), 32u) << id;
    for (char c : id) {
      ASSERT_TRUE((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) << id;
    }
    // A server-made id is also a valid client id (the same id space).
    EXPECT_TRUE(ValidateSessionId(id, "session_id").ok()) << id;
  }
}

TEST(NewSessionIdTest, TenThousandIdsAreDistinct) {
  absl::flat_hash_set<std::string> ids;
  for (int i = 0; i < 10000; ++i) ids.insert(NewSessionId());
  EXPECT_EQ(ids.size(), 10000u);
}

TEST(ValidateSessionIdTest, AcceptsEveryAllowedCharacterAndLengthsOneTo128) {
  EXPECT_TRUE(ValidateSessionId("a", "session_id").ok());
  EXPECT_TRUE(ValidateSessionId("AZaz09._-", "session_id").ok());
  EXPECT_TRUE(ValidateSessionId("user-42.chat_7", "session_id").ok());
  EXPECT_TRUE(ValidateSessionId(std::string(kMaxSessionIdLength, 'x'), "session_id").ok());
  EXPECT_TRUE(ValidateSessionId("...", "session_id").ok());
}

TEST(ValidateSessionIdTest, RejectsEmptyNamingTheField) {
  const absl::Status st = ValidateSessionId("", "open.session_id");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("open.session_id"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("got 0"));
}

TEST(ValidateSessionIdTest, Rejects129CharactersNamingTheField) {
  const absl::Status st = ValidateSessionId(std::string(129, 'x'), "new_session_id");
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("new_session_id"));
  EXPECT_THAT(std::string(st.message()), HasSubstr("got 129"));
}

TEST(ValidateSessionIdTest, RejectsBadCharactersNamingFieldAndPosition) {
  struct Case {
    std::string id;
    size_t bad_index;
  };
  const Case cases[] = {
      {"a b", 1},
      {"/etc", 0},
      {"abc/", 3},
      {"x:y", 1},
      {"\xc3\xa9t\xc3\xa9", 0},  // UTF-8 "été"
      {std::string("a\0b", 3), 1},
      {"tab\there", 3},
      {"semi;colon", 4},
      {"percent%20", 7},
      {"star*", 4},
  };
  for (const Case& c : cases) {
    const absl::Status st = ValidateSessionId(c.id, "session_id");
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << c.id;
    EXPECT_THAT(std::string(st.message()), HasSubstr("session_id")) << c.id;
    EXPECT_THAT(std::string(st.message()), HasSubstr("character " + std::to_string(c.bad_index)))
        << c.id;
  }
}

// StoredSessionId keeps every length it can be given (inline up to kInline, on the heap beyond)
// byte for byte, and reassignment across the inline/heap boundary keeps no stale bytes.
TEST(StoredSessionIdTest, HoldsEveryLengthFromZeroTo255) {
  StoredSessionId id;
  EXPECT_TRUE(id.empty());
  EXPECT_EQ(id.view(), "");
  for (size_t n : {size_t{1}, size_t{31}, StoredSessionId::kInline, StoredSessionId::kInline + 1,
                   kMaxSessionIdLength, size_t{255}, size_t{7}, size_t{200}, size_t{0}}) {
    std::string want;
    for (size_t i = 0; i < n; ++i) want.push_back(static_cast<char>('a' + (i * 7 + n) % 26));
    id = want;
    EXPECT_EQ(id.size(), n);
    EXPECT_EQ(id.view(), want) << n;
    EXPECT_EQ(id.str(), want) << n;
    EXPECT_TRUE(id == want) << n;
  }
  const std::string server_made = NewSessionId();
  id = server_made;
  EXPECT_EQ(absl::string_view(id), server_made);
}

}  // namespace
}  // namespace aaren

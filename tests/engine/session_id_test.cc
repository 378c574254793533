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
// byte for byte, and reassignment across the inline/heap/bytes forms keeps no stale bytes.
TEST(StoredSessionIdTest, HoldsEveryLengthFromZeroTo254) {
  StoredSessionId id;
  StoredSessionId::Text scratch;
  EXPECT_TRUE(id.empty());
  EXPECT_EQ(id.view(scratch), "");
  for (size_t n :
       {size_t{1}, size_t{31}, size_t{32}, StoredSessionId::kInline, StoredSessionId::kInline + 1,
        kMaxSessionIdLength, size_t{254}, size_t{7}, size_t{200}, size_t{0}}) {
    std::string want;
    for (size_t i = 0; i < n; ++i) want.push_back(static_cast<char>('a' + (i * 7 + n) % 26));
    id = want;
    EXPECT_EQ(id.size(), n);
    EXPECT_EQ(id.view(scratch), want) << n;
    EXPECT_EQ(id.str(), want) << n;
    EXPECT_TRUE(id == want) << n;
    EXPECT_FALSE(id == want + "x") << n;
    EXPECT_FALSE(id.held_as_bytes()) << n;  // (not all hex digits)
  }
}

// Server-made ids, and client ids of the same form (32 lowercase hex digits), are held as their
// 16 bytes and read back exactly; any other 32-character id (an uppercase digit, one character
// outside [0-9a-f]) is held as text and never equals a hex id.
TEST(StoredSessionIdTest, HexIdsAreHeldAsTheirBytesAndReadBackExactly) {
  StoredSessionId id;
  StoredSessionId::Text scratch;
  for (int i = 0; i < 200; ++i) {
    const std::string server_made = NewSessionId();
    id = server_made;
    ASSERT_TRUE(id.held_as_bytes()) << server_made;
    EXPECT_EQ(id.size(), 32u);
    EXPECT_EQ(id.view(scratch), server_made);
    EXPECT_EQ(id.str(), server_made);
    EXPECT_TRUE(id == server_made);
    std::string other = server_made;
    other[static_cast<size_t>(i % 32)] = other[static_cast<size_t>(i % 32)] == '0' ? '1' : '0';
    EXPECT_FALSE(id == other);
    EXPECT_FALSE(id == server_made.substr(0, 31));
    EXPECT_FALSE(id == server_made + "0");
  }
  const std::string zeros(32, '0'), effs(32, 'f');
  id = zeros;
  EXPECT_TRUE(id.held_as_bytes());
  EXPECT_EQ(id.str(), zeros);
  id = effs;
  EXPECT_TRUE(id.held_as_bytes());
  EXPECT_EQ(id.str(), effs);
  for (const std::string& text :
       {std::string(31, 'a') + "A", std::string(31, 'a') + "g", std::string(31, '0') + "-"}) {
    id = text;
    EXPECT_FALSE(id.held_as_bytes()) << text;
    EXPECT_EQ(id.str(), text);
    EXPECT_TRUE(id == text);
    EXPECT_FALSE(id == std::string(31, 'a') + "a");
  }
  // From bytes to heap text and back to bytes: nothing stale.
  id = std::string(100, 'q');
  id = effs;
  EXPECT_EQ(id.str(), effs);
  id = "short";
  EXPECT_EQ(id.str(), "short");
}

}  // namespace
}  // namespace aaren

// SPDX-License-Identifier: Apache-2.0
// The session record format (session_record.h) and the StateStore contract (state_store.h) over
// MemoryStore and RocksDbStore: round trips, damaged records, batch semantics, and RocksDB under
// kill -9, damaged files, a torn WAL and a full disk (a small tmpfs; skipped without root).
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "engine/store/memory_store.h"
#include "engine/store/redis_store.h"
#include "engine/store/rocksdb_store.h"
#include "engine/store/session_record.h"
#include "engine/store/state_store.h"
#include "tests/support/redis_server.h"

namespace aaren {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

// ---- helpers ----

// A fresh directory under the test temp dir, removed (with everything in it) at the end.
class ScopedTempDir {
 public:
  ScopedTempDir() {
    std::string pattern = (fs::path(::testing::TempDir()) / "state_store_test.XXXXXX").string();
    if (mkdtemp(pattern.data()) == nullptr) {
      ADD_FAILURE() << "mkdtemp " << pattern << ": " << std::strerror(errno);
    }
    path_ = pattern;
  }
  ~ScopedTempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// A seeded generator; the seed is printed with every failure of the test that uses it.
std::mt19937_64 SeededRng() {
  const uint64_t seed = std::random_device{}() ^ (uint64_t{std::random_device{}()} << 32);
  ::testing::Test::RecordProperty("seed", std::to_string(seed));
  std::cerr << "[ seed     ] " << seed << "\n";
  return std::mt19937_64(seed);
}

std::string RandomBytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (char& c : s) c = static_cast<char>(rng() & 0xff);
  return s;
}

float RandomFloat(std::mt19937_64& rng) {
  switch (rng() % 12) {
    case 0:
      return -std::numeric_limits<float>::infinity();
    case 1:
      return std::numeric_limits<float>::infinity();
    case 2:
      return std::numeric_limits<float>::quiet_NaN();
    case 3:
      return -0.0f;
    case 4:
      return std::numeric_limits<float>::denorm_min();
    case 5:
      return std::numeric_limits<float>::lowest();
    case 6: {  // any bit pattern
      const uint32_t bits = static_cast<uint32_t>(rng());
      float f;
      std::memcpy(&f, &bits, sizeof(f));
      return f;
    }
    default:
      return std::uniform_real_distribution<float>(-1e6f, 1e6f)(rng);
  }
}

std::vector<float> RandomFloats(std::mt19937_64& rng, size_t n) {
  std::vector<float> v(n);
  for (float& f : v) f = RandomFloat(rng);
  return v;
}

SessionRecord RandomRecord(std::mt19937_64& rng, size_t max_floats) {
  SessionRecord r;
  r.tenant = RandomBytes(rng, rng() % 24);
  r.id = RandomBytes(rng, 1 + rng() % 64);
  r.model = RandomBytes(rng, rng() % 40);
  r.config_hash = RandomBytes(rng, rng() % 70);
  r.uid = rng();
  r.position = static_cast<int64_t>(rng());
  r.created_ms = static_cast<int64_t>(rng());
  r.last_used_ms = static_cast<int64_t>(rng());
  r.idle_ttl_s = static_cast<uint32_t>(rng());
  r.state = RandomFloats(rng, 1 + rng() % max_floats);
  r.state[rng() % r.state.size()] = -std::numeric_limits<float>::infinity();
  r.last_output = RandomFloats(rng, rng() % max_floats);
  r.retry_position_before = (rng() % 4 == 0) ? -1 : static_cast<int64_t>(rng());
  r.retry_length = static_cast<int64_t>(rng());
  r.retry_fingerprint = rng();
  r.retry_mode = static_cast<uint8_t>(rng());
  r.retry_value_flops = static_cast<int64_t>(rng());
  r.retry_value_flops_exact = static_cast<int64_t>(rng());
  r.retry_outputs = RandomFloats(rng, rng() % max_floats);
  r.writer = RandomBytes(rng, rng() % 32);
  return r;
}

// Floats compared by bit pattern: NaN == NaN, -0 != +0.
std::vector<uint32_t> Bits(const std::vector<float>& v) {
  std::vector<uint32_t> bits(v.size());
  if (!v.empty()) std::memcpy(bits.data(), v.data(), 4 * v.size());
  return bits;
}

void ExpectSameRecord(const SessionRecord& got, const SessionRecord& want) {
  EXPECT_EQ(got.tenant, want.tenant);
  EXPECT_EQ(got.id, want.id);
  EXPECT_EQ(got.model, want.model);
  EXPECT_EQ(got.config_hash, want.config_hash);
  EXPECT_EQ(got.uid, want.uid);
  EXPECT_EQ(got.position, want.position);
  EXPECT_EQ(got.created_ms, want.created_ms);
  EXPECT_EQ(got.last_used_ms, want.last_used_ms);
  EXPECT_EQ(got.idle_ttl_s, want.idle_ttl_s);
  EXPECT_EQ(Bits(got.state), Bits(want.state));
  EXPECT_EQ(Bits(got.last_output), Bits(want.last_output));
  EXPECT_EQ(got.retry_position_before, want.retry_position_before);
  EXPECT_EQ(got.retry_length, want.retry_length);
  EXPECT_EQ(got.retry_fingerprint, want.retry_fingerprint);
  EXPECT_EQ(got.retry_mode, want.retry_mode);
  EXPECT_EQ(got.retry_value_flops, want.retry_value_flops);
  EXPECT_EQ(got.retry_value_flops_exact, want.retry_value_flops_exact);
  EXPECT_EQ(Bits(got.retry_outputs), Bits(want.retry_outputs));
  EXPECT_EQ(got.writer, want.writer);
}

// CRC-32 (IEEE 802.3, reflected, as zlib computes it), written out here so the test checks the
// format rather than the encoder's own call.
uint32_t ReferenceCrc32(const std::string& bytes, size_t from) {
  uint32_t crc = 0xffffffffu;
  for (size_t i = from; i < bytes.size(); ++i) {
    crc ^= static_cast<uint8_t>(bytes[i]);
    for (int k = 0; k < 8; ++k) crc = (crc >> 1) ^ (0xedb88320u & (0u - (crc & 1u)));
  }
  return ~crc;
}

uint32_t LoadLe32(const std::string& b, size_t at) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i)
    v |= static_cast<uint32_t>(static_cast<uint8_t>(b[at + i])) << (8 * i);
  return v;
}

void StoreLe32(std::string* b, size_t at, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*b)[at + i] = static_cast<char>((v >> (8 * i)) & 0xff);
}

// Recomputes the CRC field of an encoded record after the test changed it.
void FixCrc(std::string* b) { StoreLe32(b, 8, ReferenceCrc32(*b, 12)); }

// An independent little-endian writer for the layout test.
struct LeWriter {
  std::string out;
  void U8(uint8_t v) { out.push_back(static_cast<char>(v)); }
  void U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) U8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) U8(static_cast<uint8_t>(v >> (8 * i)));
  }
  void Str(const std::string& s) {
    U32(static_cast<uint32_t>(s.size()));
    out += s;
  }
  void Floats(const std::vector<float>& v) {
    U32(static_cast<uint32_t>(v.size()));
    for (uint32_t bits : Bits(v)) U32(bits);
  }
};

// Every record of a store under `prefix`, in scan order.
absl::StatusOr<std::vector<std::pair<std::string, std::string>>> ScanAll(
    StateStore& store, absl::string_view prefix = "") {
  std::vector<std::pair<std::string, std::string>> out;
  absl::Status st = store.Scan(prefix, [&](absl::string_view k, absl::string_view v) {
    out.emplace_back(std::string(k), std::string(v));
    return absl::OkStatus();
  });
  if (!st.ok()) return st;
  return out;
}

StoreWrite Put(std::string key, std::string value) {
  return StoreWrite{std::move(key), std::move(value)};
}
StoreWrite Del(std::string key) { return StoreWrite{std::move(key), std::nullopt}; }

#define ASSERT_OK(expr)                               \
  do {                                                \
    const absl::Status assert_ok_st_ = (expr);        \
    ASSERT_TRUE(assert_ok_st_.ok()) << assert_ok_st_; \
  } while (0)

// ---- the record format ----

TEST(SessionRecordTest, RoundTripsRandomRecords) {
  std::mt19937_64 rng = SeededRng();
  for (int i = 0; i < 200; ++i) {
    const SessionRecord r = RandomRecord(rng, i < 150 ? 64 : 5000);
    const std::string bytes = EncodeSessionRecord(r);
    absl::StatusOr<SessionRecord> back = DecodeSessionRecord(bytes);
    ASSERT_TRUE(back.ok()) << back.status();
    ExpectSameRecord(*back, r);
    if (HasFailure()) return;
  }
}

TEST(SessionRecordTest, EmptyFieldsRoundTrip) {
  SessionRecord r;  // every string and array empty
  absl::StatusOr<SessionRecord> back = DecodeSessionRecord(EncodeSessionRecord(r));
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameRecord(*back, r);
}

TEST(SessionRecordTest, LayoutIsTheDocumentedOne) {
  std::mt19937_64 rng = SeededRng();
  const SessionRecord r = RandomRecord(rng, 16);
  LeWriter w;
  w.Str(r.tenant);
  w.Str(r.id);
  w.Str(r.model);
  w.Str(r.config_hash);
  w.U64(r.uid);
  w.U64(static_cast<uint64_t>(r.position));
  w.U64(static_cast<uint64_t>(r.created_ms));
  w.U64(static_cast<uint64_t>(r.last_used_ms));
  w.U32(r.idle_ttl_s);
  w.Floats(r.state);
  w.Floats(r.last_output);
  w.U64(static_cast<uint64_t>(r.retry_position_before));
  w.U64(static_cast<uint64_t>(r.retry_length));
  w.U64(r.retry_fingerprint);
  w.U8(r.retry_mode);
  w.U64(static_cast<uint64_t>(r.retry_value_flops));
  w.U64(static_cast<uint64_t>(r.retry_value_flops_exact));
  w.Floats(r.retry_outputs);
  w.Str(r.writer);

  const std::string bytes = EncodeSessionRecord(r);
  ASSERT_EQ(bytes.size(), 12 + w.out.size());
  EXPECT_EQ(bytes.substr(0, 4), "AAR1");
  EXPECT_EQ(LoadLe32(bytes, 4), kSessionRecordVersion);
  EXPECT_EQ(LoadLe32(bytes, 8), ReferenceCrc32(bytes, 12));
  EXPECT_TRUE(bytes.substr(12) == w.out) << "payload differs from the documented layout";
}

TEST(SessionRecordTest, EveryTruncationIsDataLoss) {
  std::mt19937_64 rng = SeededRng();
  const std::string bytes = EncodeSessionRecord(RandomRecord(rng, 32));
  for (size_t n = 0; n < bytes.size(); ++n) {
    absl::StatusOr<SessionRecord> r = DecodeSessionRecord(absl::string_view(bytes).substr(0, n));
    ASSERT_FALSE(r.ok()) << "a record cut to " << n << " of " << bytes.size() << " bytes decoded";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
    EXPECT_THAT(r.status().message(), HasSubstr("truncated")) << "at " << n;
  }
}

TEST(SessionRecordTest, TrailingBytesAreDataLoss) {
  std::mt19937_64 rng = SeededRng();
  std::string bytes = EncodeSessionRecord(RandomRecord(rng, 8));
  bytes += "x";
  FixCrc(&bytes);
  absl::StatusOr<SessionRecord> r = DecodeSessionRecord(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
}

TEST(SessionRecordTest, EveryByteFlipIsDataLoss) {
  std::mt19937_64 rng = SeededRng();
  const std::string bytes = EncodeSessionRecord(RandomRecord(rng, 24));
  for (size_t i = 0; i < bytes.size(); ++i) {
    std::string bad = bytes;
    bad[i] = static_cast<char>(bad[i] ^ (1 + rng() % 255));
    absl::StatusOr<SessionRecord> r = DecodeSessionRecord(bad);
    ASSERT_FALSE(r.ok()) << "a flip at byte " << i << " was not noticed";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  }
}

TEST(SessionRecordTest, SampledByteFlipsInABigRecordAreDataLoss) {
  std::mt19937_64 rng = SeededRng();
  SessionRecord big = RandomRecord(rng, 16);
  big.state = RandomFloats(rng, 250000);  // a 1 MB state
  const std::string bytes = EncodeSessionRecord(big);
  for (int k = 0; k < 300; ++k) {
    const size_t i = rng() % bytes.size();
    std::string bad = bytes;
    bad[i] = static_cast<char>(bad[i] ^ (1 + rng() % 255));
    absl::StatusOr<SessionRecord> r = DecodeSessionRecord(bad);
    ASSERT_FALSE(r.ok()) << "a flip at byte " << i << " was not noticed";
    EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  }
}

// A damaged payload whose CRC was recomputed reaches the parser: it must refuse it or decode it,
// never read past the input (huge lengths included).
TEST(SessionRecordTest, DamagedPayloadsWithValidChecksumsNeverCrash) {
  std::mt19937_64 rng = SeededRng();
  const std::string bytes = EncodeSessionRecord(RandomRecord(rng, 16));
  for (int k = 0; k < 20000; ++k) {
    std::string bad = bytes;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && bad.size() > 12; ++e) {
      const size_t i = 12 + rng() % (bad.size() - 12);
      switch (rng() % 3) {
        case 0:
          bad[i] = static_cast<char>(rng());
          break;
        case 1:  // a length field's worth of 0xff
          for (size_t j = i; j < std::min(bad.size(), i + 4); ++j) bad[j] = '\xff';
          break;
        default:
          bad.resize(i);
          break;
      }
    }
    FixCrc(&bad);
    absl::StatusOr<SessionRecord> r = DecodeSessionRecord(bad);
    if (!r.ok()) {
      ASSERT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
    }
  }
  for (int k = 0; k < 2000; ++k) {
    std::string junk = RandomBytes(rng, rng() % 200);
    if (junk.size() >= 4 && rng() % 2 == 0) junk.replace(0, 4, "AAR1");
    absl::StatusOr<SessionRecord> r = DecodeSessionRecord(junk);
    if (!r.ok()) {
      ASSERT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
    }
  }
}

TEST(SessionRecordTest, Version1RecordsStillDecode) {
  // A version 1 record is a version 2 one without the trailing writer field.
  std::mt19937_64 rng = SeededRng();
  SessionRecord r = RandomRecord(rng, 16);
  r.writer.clear();
  std::string bytes = EncodeSessionRecord(r);
  bytes.resize(bytes.size() - 4);  // the empty writer's length
  StoreLe32(&bytes, 4, 1);
  FixCrc(&bytes);
  absl::StatusOr<SessionRecord> got = DecodeSessionRecord(bytes);
  ASSERT_OK(got.status());
  EXPECT_EQ(got->id, r.id);
  EXPECT_EQ(got->position, r.position);
  EXPECT_EQ(Bits(got->state), Bits(r.state));
  EXPECT_EQ(got->writer, "");
}

TEST(SessionRecordTest, NewerVersionIsRefusedSayingSo) {
  std::mt19937_64 rng = SeededRng();
  std::string bytes = EncodeSessionRecord(RandomRecord(rng, 8));
  StoreLe32(&bytes, 4, 3);
  FixCrc(&bytes);
  absl::StatusOr<SessionRecord> r = DecodeSessionRecord(bytes);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("format version 3 is newer than this server's 2"));
}

TEST(SessionRecordTest, BadMagicAndBadChecksumSaySo) {
  std::mt19937_64 rng = SeededRng();
  const std::string bytes = EncodeSessionRecord(RandomRecord(rng, 8));
  std::string magic = bytes;
  magic[0] = 'X';
  absl::StatusOr<SessionRecord> r = DecodeSessionRecord(magic);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("bad magic"));

  std::string crc = bytes;
  crc[8] = static_cast<char>(crc[8] ^ 1);
  r = DecodeSessionRecord(crc);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(r.status().message(), HasSubstr("checksum mismatch"));
}

TEST(SessionRecordTest, SessionKeyFormat) {
  EXPECT_EQ(SessionKey("acme", "abc-1"), "s/acme/abc-1");
  EXPECT_EQ(SessionKey("", "x"), "s//x");
  EXPECT_EQ(kSessionKeyPrefix, "s/");
  EXPECT_TRUE(absl::StartsWith(SessionKey("t", "i"), kSessionKeyPrefix));
}

// ---- the StateStore contract, for every implementation ----

struct MemoryStoreMaker {
  static absl::StatusOr<std::unique_ptr<StateStore>> Make(const std::string& dir) {
    return std::unique_ptr<StateStore>(std::make_unique<MemoryStore>());
  }
};

struct RocksDbStoreMaker {
  static absl::StatusOr<std::unique_ptr<StateStore>> Make(const std::string& dir) {
    absl::StatusOr<std::unique_ptr<RocksDbStore>> s = RocksDbStore::Open(dir + "/db");
    if (!s.ok()) return s.status();
    return std::unique_ptr<StateStore>(std::move(*s));
  }
};

// One redis-server for the program (started on first use), emptied before each test.
struct RedisStoreMaker {
  static absl::StatusOr<std::unique_ptr<StateStore>> Make(const std::string&) {
    static ScopedTempDir* dir = new ScopedTempDir();
    static testing::RedisServer* redis = [] {
      absl::StatusOr<std::unique_ptr<testing::RedisServer>> r =
          testing::RedisServer::Start(testing::RedisIn(dir->path()));
      if (!r.ok()) {
        std::cerr << r.status() << "\n";
        return static_cast<testing::RedisServer*>(nullptr);
      }
      return r->release();
    }();
    if (redis == nullptr) return absl::UnavailableError("redis-server did not start");
    absl::StatusOr<std::string> flushed = redis->Command({"FLUSHALL"});
    if (!flushed.ok()) return flushed.status();
    absl::StatusOr<std::unique_ptr<RedisStore>> s = RedisStore::Open(redis->spec(), {});
    if (!s.ok()) return s.status();
    return std::unique_ptr<StateStore>(std::move(*s));
  }
};

template <typename Maker>
class StateStoreContractTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<StateStore>> s = Maker::Make(dir_.path());
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }

  std::optional<std::string> MustGet(absl::string_view key) {
    absl::StatusOr<std::optional<std::string>> v = store_->Get(key);
    EXPECT_TRUE(v.ok()) << v.status();
    return v.ok() ? *v : std::nullopt;
  }

  ScopedTempDir dir_;
  std::unique_ptr<StateStore> store_;
};

class StoreNames {
 public:
  template <typename T>
  static std::string GetName(int) {
    if (std::is_same_v<T, MemoryStoreMaker>) return "Memory";
    if (std::is_same_v<T, RedisStoreMaker>) return "Redis";
    return "RocksDb";
  }
};

using StoreMakers = ::testing::Types<MemoryStoreMaker, RocksDbStoreMaker, RedisStoreMaker>;
TYPED_TEST_SUITE(StateStoreContractTest, StoreMakers, StoreNames);

TYPED_TEST(StateStoreContractTest, CommitPutsAndDeletes) {
  ASSERT_OK(this->store_->Commit({Put("a", "1"), Put("b", "2"), Put("c", "3")}));
  EXPECT_EQ(this->MustGet("a"), "1");
  EXPECT_EQ(this->MustGet("b"), "2");
  EXPECT_EQ(this->MustGet("c"), "3");
  ASSERT_OK(this->store_->Commit({Del("b"), Put("a", "1b"), Put("d", "4")}));
  EXPECT_EQ(this->MustGet("a"), "1b");
  EXPECT_EQ(this->MustGet("b"), std::nullopt);
  EXPECT_EQ(this->MustGet("c"), "3");
  EXPECT_EQ(this->MustGet("d"), "4");
  // Deleting a key that is not there is fine.
  ASSERT_OK(this->store_->Commit({Del("never")}));
  EXPECT_EQ(this->MustGet("never"), std::nullopt);
}

TYPED_TEST(StateStoreContractTest, WritesApplyInBatchOrder) {
  ASSERT_OK(this->store_->Commit({Put("k", "old")}));
  ASSERT_OK(this->store_->Commit({Del("k"), Put("k", "new")}));
  EXPECT_EQ(this->MustGet("k"), "new");
  ASSERT_OK(this->store_->Commit({Put("j", "x"), Del("j")}));
  EXPECT_EQ(this->MustGet("j"), std::nullopt);
  ASSERT_OK(this->store_->Commit({Put("m", "1"), Put("m", "2"), Put("m", "3")}));
  EXPECT_EQ(this->MustGet("m"), "3");
}

TYPED_TEST(StateStoreContractTest, GetMissingIsNullopt) {
  EXPECT_EQ(this->MustGet("nothing"), std::nullopt);
  EXPECT_EQ(this->MustGet(""), std::nullopt);
}

TYPED_TEST(StateStoreContractTest, BinaryValuesRoundTrip) {
  std::mt19937_64 rng = SeededRng();
  const std::string big = RandomBytes(rng, 1 << 20);
  const std::string with_nul("a\0b\0", 4);
  ASSERT_OK(this->store_->Commit(
      {Put("big", big), Put(std::string("k\0z", 3), with_nul), Put("empty", "")}));
  EXPECT_TRUE(this->MustGet("big") == big);
  EXPECT_EQ(this->MustGet(std::string("k\0z", 3)), with_nul);
  EXPECT_EQ(this->MustGet("k"), std::nullopt);
  EXPECT_EQ(this->MustGet("empty"), "");  // an empty value is a value, not a delete
}

TYPED_TEST(StateStoreContractTest, ScanVisitsThePrefixInKeyOrder) {
  std::mt19937_64 rng = SeededRng();
  std::vector<std::string> keys = {"s/a/1", "s/a/2", "s/a/10", "s/a/\xff", "s/a/",  "s/b/1",
                                   "s/a",   "s/",    "r/a/1",  "t/a/1",    "s/ab/1"};
  std::shuffle(keys.begin(), keys.end(), rng);
  std::vector<StoreWrite> batch;
  for (const std::string& k : keys) batch.push_back(Put(k, "v" + k));
  ASSERT_OK(this->store_->Commit(batch));

  auto got = ScanAll(*this->store_, "s/a/");
  ASSERT_TRUE(got.ok()) << got.status();
  std::vector<std::pair<std::string, std::string>> want = {{"s/a/", "vs/a/"},
                                                           {"s/a/1", "vs/a/1"},
                                                           {"s/a/10", "vs/a/10"},
                                                           {"s/a/2", "vs/a/2"},
                                                           {"s/a/\xff", "vs/a/\xff"}};
  EXPECT_EQ(*got, want);

  got = ScanAll(*this->store_, "");
  ASSERT_TRUE(got.ok()) << got.status();
  std::vector<std::string> all;
  for (const auto& kv : *got) all.push_back(kv.first);
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(all, sorted);

  got = ScanAll(*this->store_, "u/");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->empty());
}

TYPED_TEST(StateStoreContractTest, EmptyBatchIsOk) {
  ASSERT_OK(this->store_->Commit({}));
  auto got = ScanAll(*this->store_);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->empty());
}

TYPED_TEST(StateStoreContractTest, ScanStopsAtTheFirstErrorOfFn) {
  std::vector<StoreWrite> batch;
  for (int i = 0; i < 10; ++i) batch.push_back(Put(absl::StrCat("p/", i), "v"));
  ASSERT_OK(this->store_->Commit(batch));
  int calls = 0;
  absl::Status st = this->store_->Scan("p/", [&](absl::string_view k, absl::string_view) {
    ++calls;
    if (k == "p/3") return absl::AbortedError("stop here");
    return absl::OkStatus();
  });
  EXPECT_EQ(st, absl::AbortedError("stop here"));
  EXPECT_EQ(calls, 4);
}

TYPED_TEST(StateStoreContractTest, ConcurrentCommitsAndReads) {
  constexpr int kThreads = 4;
  constexpr int kCommits = 50;
  std::vector<std::thread> threads;
  std::atomic<int> errors{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCommits; ++i) {
        const std::string key = absl::StrCat("c/", t, "/", i);
        if (!this->store_->Commit({Put(key, key), Put(absl::StrCat("last/", t), key)}).ok()) {
          ++errors;
        }
        absl::StatusOr<std::optional<std::string>> v = this->store_->Get(key);
        if (!v.ok() || *v != key) ++errors;
        if (!this->store_
                 ->Scan("last/",
                        [](absl::string_view, absl::string_view) { return absl::OkStatus(); })
                 .ok()) {
          ++errors;
        }
      }
    });
  }
  for (std::thread& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  auto got = ScanAll(*this->store_, "c/");
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->size(), static_cast<size_t>(kThreads * kCommits));
}

// ---- MemoryStore ----

TEST(MemoryStoreTest, FailCommitsAppliesNothingUntilCleared) {
  MemoryStore store;
  EXPECT_EQ(store.Describe(), "memory:");
  EXPECT_EQ(store.DiskBytes(), 0);
  ASSERT_OK(store.Commit({Put("a", "1"), Put("b", "2")}));
  EXPECT_EQ(store.commits(), 1);
  EXPECT_EQ(store.writes(), 2);

  const absl::Status down = absl::UnavailableError("state store memory: injected");
  store.FailCommits(down);
  EXPECT_EQ(store.Commit({Put("c", "3"), Del("a")}), down);
  EXPECT_EQ(store.Commit({}), down);
  EXPECT_EQ(store.commits(), 1);
  EXPECT_EQ(store.writes(), 2);
  EXPECT_EQ(*store.Get("a"), "1");
  EXPECT_EQ(*store.Get("c"), std::nullopt);

  store.FailCommits(absl::OkStatus());
  ASSERT_OK(store.Commit({Put("c", "3"), Del("a")}));
  ASSERT_OK(store.Commit({}));
  EXPECT_EQ(store.commits(), 3);
  EXPECT_EQ(store.writes(), 4);
  EXPECT_EQ(*store.Get("a"), std::nullopt);
  EXPECT_EQ(*store.Get("c"), "3");
}

// ---- OpenStateStore ----

TEST(OpenStateStoreTest, Specs) {
  ScopedTempDir tmp;
  absl::StatusOr<std::unique_ptr<StateStore>> s = OpenStateStore("");
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(*s, nullptr);

  s = OpenStateStore("memory:");
  ASSERT_TRUE(s.ok()) << s.status();
  ASSERT_NE(*s, nullptr);
  EXPECT_EQ((*s)->Describe(), "memory:");

  const std::string a = tmp.path() + "/a";
  s = OpenStateStore("rocksdb:" + a);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->Describe(), "rocksdb:" + a);
  ASSERT_OK((*s)->Commit({Put("k", "v")}));
  s->reset();
  EXPECT_TRUE(fs::is_directory(a));

  s = OpenStateStore(a);  // a bare path is a RocksDB directory
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ((*s)->Describe(), "rocksdb:" + a);
  EXPECT_EQ(*(*s)->Get("k"), "v");
  s->reset();

  s = OpenStateStore("rocksdb:");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(s.status().message(), HasSubstr("--state_store"));

  // Nothing listens on port 1: a start-up error naming the flag and the address.
  s = OpenStateStore("redis://127.0.0.1:1");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("--state_store: redis://127.0.0.1:1/0"));
}

// ---- RocksDbStore ----

class RocksDbStoreTest : public ::testing::Test {
 protected:
  std::string DbDir() const { return dir_.path() + "/db"; }

  std::unique_ptr<RocksDbStore> MustOpen(const std::string& dir) {
    absl::StatusOr<std::unique_ptr<RocksDbStore>> s = RocksDbStore::Open(dir);
    EXPECT_TRUE(s.ok()) << s.status();
    return s.ok() ? std::move(*s) : nullptr;
  }

  // The files of `dir` whose names end with `ext`, largest number (newest) last.
  static std::vector<fs::path> FilesEndingWith(const std::string& dir, const std::string& ext) {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir)) {
      if (e.path().extension() == ext) out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  ScopedTempDir dir_;
};

std::string ValueOf(int n, size_t bytes) {
  std::string v = absl::StrCat("value ", n, ":");
  v.resize(bytes, static_cast<char>('a' + n % 26));
  return v;
}

TEST_F(RocksDbStoreTest, DataSurvivesCloseAndReopen) {
  {
    auto store = MustOpen(DbDir());
    ASSERT_NE(store, nullptr);
    EXPECT_EQ(store->Describe(), "rocksdb:" + DbDir());
    EXPECT_EQ(store->dir(), DbDir());
    for (int i = 0; i < 100; ++i) {
      ASSERT_OK(store->Commit({Put(absl::StrCat("k/", 1000 + i), ValueOf(i, 300))}));
    }
    ASSERT_OK(store->Commit({Del("k/1050")}));
  }
  auto store = MustOpen(DbDir());
  ASSERT_NE(store, nullptr);
  auto all = ScanAll(*store, "k/");
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), 99u);
  int i = 0;
  for (const auto& [k, v] : *all) {
    if (i == 50) ++i;
    EXPECT_EQ(k, absl::StrCat("k/", 1000 + i));
    EXPECT_EQ(v, ValueOf(i, 300));
    ++i;
  }
}

// The child of AcknowledgedCommitsSurviveKill9: commits batch after batch, writing each batch's
// number to `ack_fd` once its Commit returned OK. Never returns.
[[noreturn]] void CommitUntilKilled(const std::string& dir, int round, int ack_fd) {
  absl::StatusOr<std::unique_ptr<RocksDbStore>> store = RocksDbStore::Open(dir);
  if (!store.ok()) _exit(3);
  for (int32_t n = 1;; ++n) {
    std::vector<StoreWrite> batch;
    for (int j = 0; j < 3; ++j) {
      batch.push_back(Put(absl::StrCat("r", round, "/b", n, "/", j), ValueOf(n * 3 + j, 200)));
    }
    batch.push_back(Put(absl::StrCat("r", round, "/last"), std::to_string(n)));
    if (!(*store)->Commit(batch).ok()) _exit(4);
    if (write(ack_fd, &n, sizeof(n)) != sizeof(n)) _exit(5);
  }
}

TEST_F(RocksDbStoreTest, AcknowledgedCommitsSurviveKill9) {
  std::mt19937_64 rng = SeededRng();
  std::vector<int32_t> acked;  // per round: the last batch the child acknowledged
  for (int round = 0; round < 5; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    const pid_t pid = fork();
    ASSERT_GE(pid, 0) << std::strerror(errno);
    if (pid == 0) {
      close(fds[0]);
      CommitUntilKilled(DbDir(), round, fds[1]);
    }
    close(fds[1]);
    // Kill it at a random moment after its first acknowledged commit.
    pollfd pfd{fds[0], POLLIN, 0};
    const int ready = poll(&pfd, 1, 20000);
    if (ready == 1) {
      std::this_thread::sleep_for(std::chrono::microseconds(rng() % 60000));
    }
    kill(pid, SIGKILL);
    int wstatus = 0;
    ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
    std::string acks;
    char buf[4096];
    for (ssize_t got; (got = read(fds[0], buf, sizeof(buf))) != 0;) {
      if (got < 0 && errno == EINTR) continue;
      ASSERT_GT(got, 0) << std::strerror(errno);
      acks.append(buf, static_cast<size_t>(got));
    }
    close(fds[0]);
    ASSERT_TRUE(WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL)
        << "the child ended by itself (exit " << WEXITSTATUS(wstatus) << ")";
    ASSERT_EQ(ready, 1) << "the child acknowledged nothing in 20 s";
    ASSERT_GE(acks.size(), sizeof(int32_t));
    ASSERT_EQ(acks.size() % sizeof(int32_t), 0u);
    int32_t last = 0;
    std::memcpy(&last, acks.data() + acks.size() - sizeof(last), sizeof(last));
    ASSERT_EQ(last, static_cast<int32_t>(acks.size() / sizeof(int32_t)));
    acked.push_back(last);
    std::cerr << "[ info     ] round " << round << ": killed after " << last
              << " acknowledged batches\n";

    auto store = MustOpen(DbDir());
    ASSERT_NE(store, nullptr);
    for (int r = 0; r <= round; ++r) {
      // Every acknowledged batch is there, whole; the one in flight at the kill is there whole
      // or not at all; nothing after it.
      for (int32_t n = 1; n <= acked[r] + 2; ++n) {
        int present = 0;
        for (int j = 0; j < 3; ++j) {
          absl::StatusOr<std::optional<std::string>> v =
              store->Get(absl::StrCat("r", r, "/b", n, "/", j));
          ASSERT_TRUE(v.ok()) << v.status();
          if (v->has_value()) {
            ++present;
            EXPECT_EQ(**v, ValueOf(n * 3 + j, 200)) << "batch " << n;
          }
        }
        if (n <= acked[r]) {
          EXPECT_EQ(present, 3) << "acknowledged batch " << n << " of round " << r << " lost";
        } else if (n == acked[r] + 1) {
          EXPECT_TRUE(present == 0 || present == 3) << "batch " << n << " half applied";
          if (present == 3 && r == round) acked[r] = n;  // it was applied; only the ack was lost
        } else {
          EXPECT_EQ(present, 0) << "batch " << n << " was never committed";
        }
      }
      absl::StatusOr<std::optional<std::string>> last_v = store->Get(absl::StrCat("r", r, "/last"));
      ASSERT_TRUE(last_v.ok()) << last_v.status();
      EXPECT_EQ(*last_v, std::to_string(acked[r]));
    }
  }
}

TEST_F(RocksDbStoreTest, SecondOpenOfAnOpenStoreFails) {
  auto first = MustOpen(DbDir());
  ASSERT_NE(first, nullptr);
  absl::StatusOr<std::unique_ptr<RocksDbStore>> second = RocksDbStore::Open(DbDir());
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(second.status().message(), HasSubstr("--state_store"));
  EXPECT_THAT(second.status().message(), HasSubstr(DbDir()));
  EXPECT_THAT(second.status().message(), HasSubstr("another process"));
  std::cerr << "[ message  ] " << second.status() << "\n";
  // The first one is unaffected.
  ASSERT_OK(first->Commit({Put("k", "v")}));
  EXPECT_EQ(*first->Get("k"), "v");
}

TEST_F(RocksDbStoreTest, OpenWhileAnotherProcessHasItFails) {
  int ready[2];
  int done[2];
  ASSERT_EQ(pipe(ready), 0);
  ASSERT_EQ(pipe(done), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0) << std::strerror(errno);
  if (pid == 0) {
    close(ready[0]);
    close(done[1]);
    absl::StatusOr<std::unique_ptr<RocksDbStore>> store = RocksDbStore::Open(DbDir());
    const char ok = store.ok() ? 'y' : 'n';
    if (write(ready[1], &ok, 1) != 1) _exit(2);
    char c;
    while (read(done[0], &c, 1) < 0 && errno == EINTR) {
    }
    _exit(0);  // the parent closed `done`: exit without closing the store, like a crash
  }
  close(ready[1]);
  close(done[0]);
  char ok = 0;
  ASSERT_EQ(read(ready[0], &ok, 1), 1);
  ASSERT_EQ(ok, 'y') << "the child could not open the store";
  absl::StatusOr<std::unique_ptr<RocksDbStore>> s = RocksDbStore::Open(DbDir());
  close(done[1]);
  close(ready[0]);
  int wstatus = 0;
  ASSERT_EQ(waitpid(pid, &wstatus, 0), pid);
  ASSERT_FALSE(s.ok()) << "opened a store another process has open";
  std::cerr << "[ message  ] " << s.status() << "\n";
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("--state_store"));
  EXPECT_THAT(s.status().message(), HasSubstr("another process"));
  // Once the other process is gone the store opens.
  EXPECT_NE(MustOpen(DbDir()), nullptr);
}

TEST_F(RocksDbStoreTest, PathUnderARegularFileFails) {
  const std::string file = dir_.path() + "/plain";
  std::ofstream(file) << "not a directory";
  absl::StatusOr<std::unique_ptr<RocksDbStore>> s = RocksDbStore::Open(file + "/db");
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("--state_store"));
  EXPECT_THAT(s.status().message(), HasSubstr(file + "/db"));
  std::cerr << "[ message  ] " << s.status() << "\n";

  s = RocksDbStore::Open(file);  // the file itself
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.status().message(), HasSubstr("--state_store"));
}

TEST_F(RocksDbStoreTest, GarbageCurrentFileIsReportedAsDamage) {
  std::mt19937_64 rng = SeededRng();
  const std::vector<std::string> garbage = {RandomBytes(rng, 37), "MANIFEST-999999\n",
                                            "../../etc/passwd\n", ""};
  for (size_t g = 0; g < garbage.size(); ++g) {
    SCOPED_TRACE(absl::StrCat("garbage ", g));
    const std::string dir = absl::StrCat(dir_.path(), "/db", g);
    {
      auto store = MustOpen(dir);
      ASSERT_NE(store, nullptr);
      ASSERT_OK(store->Commit({Put("k", "v")}));
    }
    std::ofstream(dir + "/CURRENT", std::ios::binary | std::ios::trunc) << garbage[g];
    absl::StatusOr<std::unique_ptr<RocksDbStore>> s = RocksDbStore::Open(dir);
    ASSERT_FALSE(s.ok()) << "a store with a garbage CURRENT opened";
    std::cerr << "[ message  ] " << s.status() << "\n";
    EXPECT_EQ(s.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(s.status().message(), HasSubstr("--state_store"));
    EXPECT_THAT(s.status().message(), HasSubstr("damaged")) << s.status();
    EXPECT_THAT(s.status().message(), HasSubstr("backup"));
  }
}

TEST_F(RocksDbStoreTest, DamagedSstIsDataLossOrARefusedOpen) {
  std::mt19937_64 rng = SeededRng();
  {
    auto store = MustOpen(DbDir());
    ASSERT_NE(store, nullptr);
    for (int b = 0; b < 40; ++b) {
      std::vector<StoreWrite> batch;
      for (int j = 0; j < 10; ++j) {
        batch.push_back(Put(absl::StrCat("k/", b * 10 + j + 10000), RandomBytes(rng, 4096)));
      }
      ASSERT_OK(store->Commit(batch));
    }
    ASSERT_OK(store->CompactAll());
  }
  std::vector<fs::path> ssts = FilesEndingWith(DbDir(), ".sst");
  ASSERT_FALSE(ssts.empty());
  fs::path victim = ssts[0];
  for (const fs::path& p : ssts) {
    if (fs::file_size(p) > fs::file_size(victim)) victim = p;
  }
  const uintmax_t size = fs::file_size(victim);
  ASSERT_GT(size, 1u << 20);
  {
    std::fstream f(victim, std::ios::in | std::ios::out | std::ios::binary);
    std::string mid(64, '\0');
    f.seekg(static_cast<std::streamoff>(size / 2));
    f.read(mid.data(), static_cast<std::streamsize>(mid.size()));
    for (char& c : mid) c = static_cast<char>(c ^ 0x5a);
    f.seekp(static_cast<std::streamoff>(size / 2));
    f.write(mid.data(), static_cast<std::streamsize>(mid.size()));
    ASSERT_TRUE(f.good());
  }
  absl::StatusOr<std::unique_ptr<RocksDbStore>> s = RocksDbStore::Open(DbDir());
  std::cerr << "[ message  ] open: " << s.status() << "\n";
  if (!s.ok()) {
    EXPECT_THAT(s.status().message(), HasSubstr("--state_store"));
    EXPECT_THAT(s.status().message(), HasSubstr("damaged"));
    return;
  }
  absl::Status st =
      (*s)->Scan("", [](absl::string_view, absl::string_view) { return absl::OkStatus(); });
  std::cerr << "[ message  ] scan: " << st << "\n";
  ASSERT_FALSE(st.ok()) << "a scan over a damaged SST succeeded";
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss) << st;
  EXPECT_THAT(st.message(), HasSubstr("state store rocksdb:" + DbDir()));
  EXPECT_THAT(st.message(), HasSubstr("damaged"));
  EXPECT_THAT(st.message(), HasSubstr("restore it from a backup"));
}

TEST_F(RocksDbStoreTest, TornWalTailLosesAtMostTheLastBatch) {
  constexpr int kBatches = 30;
  {
    // A process that commits and then dies without closing the store (a clean close flushes
    // the memtable into a table file and leaves no WAL to tear).
    const pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      auto store = RocksDbStore::Open(DbDir());
      if (!store.ok()) _exit(3);
      for (int n = 0; n < kBatches; ++n) {
        if (!(*store)
                 ->Commit({Put(absl::StrCat("w/", 100 + n, "/a"), ValueOf(n, 150)),
                           Put(absl::StrCat("w/", 100 + n, "/b"), ValueOf(n + 1, 150))})
                 .ok()) {
          _exit(4);
        }
      }
      _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  }
  std::vector<fs::path> logs;
  for (const fs::path& p : FilesEndingWith(DbDir(), ".log")) {
    if (fs::file_size(p) > 0) logs.push_back(p);
  }
  ASSERT_FALSE(logs.empty()) << "the commits are not in a WAL (flushed at close?)";
  const fs::path wal = logs.back();
  const uintmax_t size = fs::file_size(wal);
  ASSERT_GT(size, kBatches * 300u);  // the batches are all in it
  fs::resize_file(wal, size - 5);

  auto store = MustOpen(DbDir());
  ASSERT_NE(store, nullptr);
  for (int n = 0; n < kBatches; ++n) {
    absl::StatusOr<std::optional<std::string>> a = store->Get(absl::StrCat("w/", 100 + n, "/a"));
    absl::StatusOr<std::optional<std::string>> b = store->Get(absl::StrCat("w/", 100 + n, "/b"));
    ASSERT_TRUE(a.ok() && b.ok()) << a.status() << " " << b.status();
    if (n < kBatches - 1) {
      EXPECT_EQ(*a, ValueOf(n, 150)) << "batch " << n;
      EXPECT_EQ(*b, ValueOf(n + 1, 150)) << "batch " << n;
    } else {
      EXPECT_EQ(a->has_value(), b->has_value()) << "the torn batch was half applied";
    }
  }
  // And the store takes writes again, which survive another reopen.
  ASSERT_OK(store->Commit({Put("after", "tear")}));
  store.reset();
  store = MustOpen(DbDir());
  ASSERT_NE(store, nullptr);
  EXPECT_EQ(*store->Get("after"), "tear");
  EXPECT_EQ(*store->Get("w/100/a"), ValueOf(0, 150));
}

TEST_F(RocksDbStoreTest, CheckpointIsAStoreWithTheSameContents) {
  auto store = MustOpen(DbDir());
  ASSERT_NE(store, nullptr);
  for (int i = 0; i < 50; ++i) {
    ASSERT_OK(store->Commit({Put(absl::StrCat("c/", i), ValueOf(i, 500))}));
  }
  ASSERT_OK(store->Commit({Del("c/7")}));
  auto before = ScanAll(*store);
  ASSERT_TRUE(before.ok()) << before.status();

  const std::string backup = dir_.path() + "/backup";
  ASSERT_OK(store->Checkpoint(backup));
  ASSERT_OK(store->Commit({Put("c/later", "not in the checkpoint"), Del("c/8")}));
  absl::Status again = store->Checkpoint(backup);
  EXPECT_FALSE(again.ok()) << "a checkpoint over an existing directory";

  auto copy = MustOpen(backup);
  ASSERT_NE(copy, nullptr);
  auto got = ScanAll(*copy);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, *before);
  // The copy is independent of the original.
  ASSERT_OK(copy->Commit({Put("c/only-in-copy", "x")}));
  EXPECT_EQ(*store->Get("c/only-in-copy"), std::nullopt);
  EXPECT_EQ(*store->Get("c/later"), "not in the checkpoint");
}

TEST_F(RocksDbStoreTest, DiskBytesGrowsWithData) {
  std::mt19937_64 rng = SeededRng();
  auto store = MustOpen(DbDir());
  ASSERT_NE(store, nullptr);
  const int64_t empty = store->DiskBytes();
  EXPECT_GT(empty, 0);
  for (int i = 0; i < 16; ++i) {
    ASSERT_OK(store->Commit({Put(absl::StrCat("d/", i), RandomBytes(rng, 64 << 10))}));
  }
  const int64_t full = store->DiskBytes();
  EXPECT_GE(full, empty + (1 << 20));
  ASSERT_OK(store->CompactAll());
  EXPECT_GE(store->DiskBytes(), 1 << 20);
}

// Puts overwrite in place, so the memtable never fills by itself: Commit's own flushes keep the
// WAL near kWalBytesPerFlush however much is rewritten, and every value (shorter, same size or
// longer than the one it replaces) reads back as last written, before and after a reopen.
TEST_F(RocksDbStoreTest, RewritingTheSameKeysKeepsTheWalBounded) {
  constexpr int kKeys = 64, kCommits = 200;
  constexpr int64_t kBatchBytes = int64_t{kKeys} * (16 << 10);
  static_assert(kCommits * kBatchBytes > 3 * RocksDbStore::kWalBytesPerFlush);
  auto wal_bytes = [&] {
    int64_t n = 0;
    for (const fs::path& p : FilesEndingWith(DbDir(), ".log")) {
      // A flushed WAL may be deleted between the listing and this look: it then counts 0.
      std::error_code ec;
      const uintmax_t size = fs::file_size(p, ec);
      if (!ec) n += static_cast<int64_t>(size);
    }
    return n;
  };
  // One size, as a model's records are; the last commit makes even keys shorter, odd longer.
  auto size_of = [](int commit, int key) {
    const size_t base = 16 << 10;
    if (commit < kCommits - 1) return base;
    return key % 2 == 0 ? base - 100 : base + 100;
  };
  int64_t most = 0;
  {
    auto store = MustOpen(DbDir());
    ASSERT_NE(store, nullptr);
    for (int c = 0; c < kCommits; ++c) {
      std::vector<StoreWrite> batch;
      for (int k = 0; k < kKeys; ++k) {
        batch.push_back(Put(absl::StrCat("w/", k), ValueOf(c + k, size_of(c, k))));
      }
      ASSERT_OK(store->Commit(batch));
      most = std::max(most, wal_bytes());
    }
    // At most the WAL being written and the one whose flush is still running.
    EXPECT_LE(most, 2 * RocksDbStore::kWalBytesPerFlush + 2 * kBatchBytes);
    for (int k = 0; k < kKeys; ++k) {
      absl::StatusOr<std::optional<std::string>> v = store->Get(absl::StrCat("w/", k));
      ASSERT_TRUE(v.ok()) << v.status();
      ASSERT_TRUE(v->has_value());
      EXPECT_EQ(**v, ValueOf(kCommits - 1 + k, size_of(kCommits - 1, k))) << k;
    }
  }
  auto store = MustOpen(DbDir());
  ASSERT_NE(store, nullptr);
  auto all = ScanAll(*store, "w/");
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->size(), size_t{kKeys});
  for (const auto& [key, value] : *all) {
    int k = 0;
    ASSERT_TRUE(absl::SimpleAtoi(absl::string_view(key).substr(2), &k)) << key;
    EXPECT_EQ(value, ValueOf(kCommits - 1 + k, size_of(kCommits - 1, k))) << key;
  }
}

// ---- RocksDbStore on a full disk ----

class RocksDbDiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    mnt_ = dir_.path() + "/mnt";
    fs::create_directory(mnt_);
    if (mount("tmpfs", mnt_.c_str(), "tmpfs", 0, "size=8m,nr_inodes=1024") != 0) {
      GTEST_SKIP() << "cannot mount an 8 MiB tmpfs with 1024 inodes at " << mnt_ << " ("
                   << std::strerror(errno) << "; needs root or CAP_SYS_ADMIN)";
    }
    mounted_ = true;
  }
  void TearDown() override {
    store_.reset();
    if (mounted_ && umount2(mnt_.c_str(), 0) != 0) {
      ADD_FAILURE() << "umount " << mnt_ << ": " << std::strerror(errno);
      umount2(mnt_.c_str(), MNT_DETACH);
    }
  }

  ScopedTempDir dir_;
  std::string mnt_;
  bool mounted_ = false;
  std::unique_ptr<RocksDbStore> store_;
};

TEST_F(RocksDbDiskFullTest, FailsCleanlyAndRecoversWhenSpaceReturns) {
  // Room to give back later: a filler file written before the store fills the disk.
  const std::string filler = mnt_ + "/filler";
  {
    std::ofstream f(filler, std::ios::binary);
    const std::string mib(1 << 20, 'f');
    for (int i = 0; i < 3; ++i) f << mib;
    ASSERT_TRUE(f.good());
  }
  const std::string dir = mnt_ + "/store";
  absl::StatusOr<std::unique_ptr<RocksDbStore>> opened = RocksDbStore::Open(dir);
  ASSERT_TRUE(opened.ok()) << opened.status();
  store_ = std::move(*opened);

  // A random value size moves the moment the disk fills (WAL, info log, MANIFEST) between runs.
  std::mt19937_64 rng = SeededRng();
  const size_t kValueBytes = (4 << 10) + rng() % (28 << 10);
  std::vector<int> acked;
  absl::Status failure;
  for (int n = 0; n < 2000; ++n) {
    absl::Status st = store_->Commit({Put(absl::StrCat("f/", 10000 + n), ValueOf(n, kValueBytes))});
    if (!st.ok()) {
      failure = st;
      break;
    }
    acked.push_back(n);
  }
  std::cerr << "[ message  ] after " << acked.size() << " commits: " << failure << "\n";
  ASSERT_FALSE(failure.ok()) << "8 MiB took " << acked.size() << " commits of " << kValueBytes
                             << " bytes";
  ASSERT_GT(acked.size() * kValueBytes, 2u << 20);
  EXPECT_EQ(failure.code(), absl::StatusCode::kUnavailable) << failure;
  EXPECT_THAT(failure.message(), HasSubstr("state store rocksdb:" + dir + ": commit failed"));

  auto expect_acked_readable = [&](RocksDbStore& s) {
    for (int n : acked) {
      absl::StatusOr<std::optional<std::string>> v = s.Get(absl::StrCat("f/", 10000 + n));
      ASSERT_TRUE(v.ok()) << v.status();
      ASSERT_TRUE(v->has_value()) << "acknowledged commit " << n << " lost";
      ASSERT_TRUE(**v == ValueOf(n, kValueBytes)) << "acknowledged commit " << n << " changed";
    }
  };
  {
    SCOPED_TRACE("right after the failed commit");
    expect_acked_readable(*store_);
  }
  // The next commit closes and reopens the database. Closing gives back what RocksDB had
  // preallocated, so take every byte and every inode that is left first: then the reopen itself
  // fails (it creates a new MANIFEST and WAL), and the store must fail commits cleanly and stay
  // readable from its read-only fallback.
  const std::string filler2 = mnt_ + "/filler2";
  {
    const int fd = open(filler2.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0) << std::strerror(errno);
    const std::string chunk(4096, 'g');
    while (write(fd, chunk.data(), chunk.size()) > 0) {
    }
    close(fd);
  }
  const std::string inodes = mnt_ + "/inodes";
  ASSERT_TRUE(fs::create_directory(inodes));
  for (int i = 0;; ++i) {
    const int fd = open(absl::StrCat(inodes, "/", i).c_str(), O_WRONLY | O_CREAT, 0644);
    if (fd < 0) break;
    close(fd);
    ASSERT_LT(i, 2000) << "the tmpfs has no inode limit";
  }
  for (int attempt = 0; attempt < 2; ++attempt) {
    SCOPED_TRACE(absl::StrCat("commit ", attempt, " on the still full disk"));
    absl::Status still_full = store_->Commit({Put("f/still-full", ValueOf(1, kValueBytes))});
    std::cerr << "[ message  ] still full: " << still_full << "\n";
    ASSERT_FALSE(still_full.ok());
    EXPECT_EQ(still_full.code(), absl::StatusCode::kUnavailable) << still_full;
    EXPECT_THAT(still_full.message(), HasSubstr("state store rocksdb:" + dir + ": commit failed"));
    EXPECT_THAT(still_full.message(), HasSubstr("cannot reopen"));
    expect_acked_readable(*store_);
    auto all = ScanAll(*store_, "f/");
    ASSERT_TRUE(all.ok()) << all.status();
    EXPECT_GE(all->size(), acked.size());
    absl::Status checkpoint = store_->Checkpoint(mnt_ + "/checkpoint");
    EXPECT_EQ(checkpoint.code(), absl::StatusCode::kUnavailable) << checkpoint;
  }

  fs::remove(filler);
  fs::remove(filler2);
  fs::remove_all(inodes);
  ASSERT_OK(store_->Commit({Put("f/after", "space returned")}));
  ASSERT_OK(store_->Commit({Put("f/after2", ValueOf(2, kValueBytes))}));
  EXPECT_EQ(*store_->Get("f/after"), "space returned");
  {
    SCOPED_TRACE("after space returned");
    expect_acked_readable(*store_);
  }

  store_.reset();
  opened = RocksDbStore::Open(dir);
  ASSERT_TRUE(opened.ok()) << opened.status();
  store_ = std::move(*opened);
  {
    SCOPED_TRACE("after close and reopen");
    expect_acked_readable(*store_);
  }
  EXPECT_EQ(*store_->Get("f/after"), "space returned");
  EXPECT_EQ(*store_->Get("f/after2"), ValueOf(2, kValueBytes));
}

}  // namespace
}  // namespace aaren

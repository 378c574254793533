// SPDX-License-Identifier: Apache-2.0
#include "engine/store/redis_store.h"

#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>
#include <cstring>

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "core/status_macros.h"

namespace aaren {
namespace {

// The batch script. KEYS: the batch's keys. ARGV[1]: the client's clock (informational); then 4
// per write: op ("p" put, "d" delete), the expected version (""
// = any, else decimal; "0" = absent), the TTL in ms (puts; 0 = none), the value (puts).
// Answers 3 per write: conflict (0/1), the version (decimal string: after the write, or found),
// the value found on a conflict (nil otherwise). Versions travel as strings: Lua numbers are
// doubles and tostring() would print a large one in exponent form. Every version is at least
// Redis's clock in microseconds (TIME), so a Redis that lost recent writes (a crash with
// appendfsync everysec, no persistence) never hands out a number it gave before, as long as its
// clock moves forward and it makes fewer than a million versions a second.
constexpr char kBatchScript[] = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {}
for i = 1, #KEYS do
  local k = KEYS[i]
  local b = 1 + (i - 1) * 4
  local op, expect, ttl, val = ARGV[b + 1], ARGV[b + 2], tonumber(ARGV[b + 3]), ARGV[b + 4]
  local found = redis.call('HGET', k, 'v') or '0'
  if expect ~= '' and expect ~= found then
    out[#out + 1] = 1
    out[#out + 1] = found
    out[#out + 1] = redis.call('HGET', k, 'd')
  elseif op == 'p' then
    local n = redis.call('INCR', 'aaren/version')
    if n < now then
      n = now
      redis.call('SET', 'aaren/version', string.format('%d', n))
    end
    local v = string.format('%d', n)
    redis.call('HSET', k, 'v', v, 'd', val)
    if ttl > 0 then redis.call('PEXPIRE', k, ttl) else redis.call('PERSIST', k) end
    out[#out + 1] = 0
    out[#out + 1] = v
    out[#out + 1] = false
  else
    redis.call('DEL', k)
    out[#out + 1] = 0
    out[#out + 1] = '0'
    out[#out + 1] = false
  end
end
return out
)lua";

// The version counter (also named in kBatchScript); not a record, so Scan skips it.
constexpr absl::string_view kCounterKey = "aaren/version";

// Keys fetched per pipelined round trip of a Scan.
constexpr size_t kScanChunk = 512;

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

timeval ToTimeval(std::chrono::milliseconds ms) {
  timeval tv;
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

absl::string_view ReplyString(const redisReply* r) { return absl::string_view(r->str, r->len); }

// SCAN's MATCH pattern for keys starting with `prefix` (glob characters escaped).
std::string MatchPattern(absl::string_view prefix) {
  std::string p;
  for (char c : prefix) {
    if (c == '*' || c == '?' || c == '[' || c == ']' || c == '\\') p.push_back('\\');
    p.push_back(c);
  }
  p.push_back('*');
  return p;
}

// Error replies after which the connection is not reused: this Redis is a replica now
// (READONLY, MASTERDOWN) or still loading its data set (LOADING); a new connection may reach the
// primary behind the same address.
bool EndsConnection(const redisReply* r) {
  if (r->type != REDIS_REPLY_ERROR) return false;
  const absl::string_view text = ReplyString(r);
  return absl::StartsWith(text, "READONLY") || absl::StartsWith(text, "LOADING") ||
         absl::StartsWith(text, "MASTERDOWN");
}

}  // namespace

struct RedisStore::Conn {
  struct ContextDeleter {
    void operator()(redisContext* c) const { redisFree(c); }
  };
  explicit Conn(RedisStore* store) : owner(store) {}
  ~Conn() {
    if (owner != nullptr) owner->Closed();
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  RedisStore* owner;  // counts this connection in open_; null once the store is going away
  std::unique_ptr<redisContext, ContextDeleter> ctx;
  std::string script_sha;
  bool broken = false;

  // One command; nullptr (and `broken`) when the connection failed; `broken` too after a reply
  // that ends the connection (EndsConnection).
  Reply Command(const std::vector<absl::string_view>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    argv.reserve(args.size());
    lens.reserve(args.size());
    for (absl::string_view a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    Reply r(static_cast<redisReply*>(
        redisCommandArgv(ctx.get(), static_cast<int>(argv.size()), argv.data(), lens.data())));
    if (r == nullptr || EndsConnection(r.get())) broken = true;
    return r;
  }
  // An idle connection has nothing to read: readable means the peer closed it (EOF or reset).
  bool PeerClosed() const {
    pollfd p{ctx->fd, POLLIN, 0};
    if (poll(&p, 1, 0) <= 0) return false;
    char byte;
    const ssize_t n = recv(ctx->fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
  }
  std::string Error() const {
    if (ctx->errstr[0] == '\0') return "connection lost";
    // hiredis reports a timeout as the read's EAGAIN (EWOULDBLOCK on Linux: the same errno).
    if (ctx->err == REDIS_ERR_IO && absl::string_view(ctx->errstr) == std::strerror(EAGAIN)) {
      return absl::StrCat("no reply within ", kCommandTimeout.count(), " ms (timed out)");
    }
    return std::string(ctx->errstr);
  }
};

RedisStore::RedisStore(std::string host, int port, int db, StateStoreOptions options)
    : host_(std::move(host)), port_(port), db_(db), options_(std::move(options)) {}

RedisStore::~RedisStore() {
  absl::MutexLock lock(&mu_);
  for (std::unique_ptr<Conn>& c : idle_) c->owner = nullptr;
}

void RedisStore::Closed() {
  absl::MutexLock lock(&mu_);
  --open_;
}

absl::StatusOr<std::unique_ptr<RedisStore>> RedisStore::Open(absl::string_view spec,
                                                             const StateStoreOptions& options) {
  absl::string_view rest = spec;
  if (absl::StartsWith(rest, "rediss://")) {
    return absl::InvalidArgumentError(
        "--state_store: rediss:// (TLS to Redis) needs hiredis >= 1.0 with hiredis_ssl; this "
        "build has hiredis 0.14 (Debian 12), which has no TLS. Reach Redis over a private "
        "network or a TLS tunnel (stunnel, a service mesh) and use redis://");
  }
  if (!absl::ConsumePrefix(&rest, "redis://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("--state_store: '", spec, "' is not redis://HOST:PORT[/DB]"));
  }
  if (absl::StrContains(rest, '@')) {
    return absl::InvalidArgumentError(
        "--state_store: no credentials in the URL (it shows in process listings and logs): put "
        "the password in --state_store_password_file");
  }
  absl::string_view hostport = rest;
  int db = 0;
  if (size_t slash = rest.find('/'); slash != absl::string_view::npos) {
    hostport = rest.substr(0, slash);
    absl::string_view db_text = rest.substr(slash + 1);
    if (!db_text.empty() && (!absl::SimpleAtoi(db_text, &db) || db < 0)) {
      return absl::InvalidArgumentError(absl::StrCat("--state_store: database '", db_text, "' in '",
                                                     spec, "' is not a number >= 0"));
    }
  }
  const size_t colon = hostport.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || colon == 0 ||
      !absl::SimpleAtoi(hostport.substr(colon + 1), &port) || port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("--state_store: '", spec, "' is not redis://HOST:PORT[/DB]"));
  }
  std::string host(hostport.substr(0, colon));
  if (absl::StartsWith(host, "[") && absl::EndsWith(host, "]")) {
    host = host.substr(1, host.size() - 2);  // [::1]
  }
  std::unique_ptr<RedisStore> store(new RedisStore(std::move(host), port, db, options));
  absl::StatusOr<std::unique_ptr<Conn>> c = store->Acquire();
  if (!c.ok()) {
    return absl::FailedPreconditionError(absl::StrCat("--state_store: ", c.status().message()));
  }
  store->Release(*std::move(c));
  return store;
}

std::string RedisStore::Describe() const {
  const bool v6 = absl::StrContains(host_, ':');
  return absl::StrCat("redis://", v6 ? "[" : "", host_, v6 ? "]" : "", ":", port_, "/", db_);
}

absl::Status RedisStore::Unavailable(absl::string_view what, absl::string_view why) const {
  return absl::UnavailableError(absl::StrCat(Describe(), ": ", what, ": ", why));
}

// Counted in open_ by the caller (Acquire) before it runs; the Conn's destructor uncounts it.
absl::StatusOr<std::unique_ptr<RedisStore::Conn>> RedisStore::Connect() {
  auto c = std::make_unique<Conn>(this);
  c->ctx.reset(redisConnectWithTimeout(host_.c_str(), port_, ToTimeval(kCommandTimeout)));
  if (c->ctx == nullptr) return Unavailable("connect", "out of memory");
  if (c->ctx->err != 0) return Unavailable("connect", c->ctx->errstr);
  if (redisSetTimeout(c->ctx.get(), ToTimeval(kCommandTimeout)) != REDIS_OK) {
    return Unavailable("connect", "cannot set the timeout");
  }
  auto expect_ok = [&](const std::vector<absl::string_view>& args,
                       absl::string_view what) -> absl::Status {
    Reply r = c->Command(args);
    if (r == nullptr) return Unavailable(what, c->Error());
    if (r->type == REDIS_REPLY_ERROR) return Unavailable(what, ReplyString(r.get()));
    return absl::OkStatus();
  };
  if (!options_.password.empty()) {
    std::vector<absl::string_view> args = {"AUTH"};
    // "USER PASSWORD" for an ACL user, else the password alone.
    std::vector<absl::string_view> parts =
        absl::StrSplit(options_.password, absl::MaxSplits(' ', 1));
    for (absl::string_view p : parts) args.push_back(p);
    RETURN_IF_ERROR(expect_ok(args, "AUTH (the password of --state_store_password_file)"));
  }
  if (db_ != 0) {
    const std::string db = absl::StrCat(db_);
    RETURN_IF_ERROR(expect_ok({"SELECT", db}, absl::StrCat("SELECT ", db)));
  }
  if (!options_.client_name.empty()) {
    std::string name = options_.client_name;
    std::replace_if(
        name.begin(), name.end(), [](char ch) { return !absl::ascii_isgraph(ch); }, '_');
    RETURN_IF_ERROR(expect_ok({"CLIENT", "SETNAME", name}, "CLIENT SETNAME"));
  }
  Reply r = c->Command({"SCRIPT", "LOAD", kBatchScript});
  if (r == nullptr) return Unavailable("SCRIPT LOAD", c->Error());
  if (r->type != REDIS_REPLY_STRING) {
    return Unavailable("SCRIPT LOAD",
                       r->type == REDIS_REPLY_ERROR ? ReplyString(r.get()) : "unexpected reply");
  }
  c->script_sha = std::string(ReplyString(r.get()));
  return c;
}

absl::StatusOr<std::unique_ptr<RedisStore::Conn>> RedisStore::Acquire(Use use) {
  const int limit = kMaxConnections + (use == Use::kCommit ? kCommitReserve : 0);
  while (true) {
    std::unique_ptr<Conn> c;
    {
      absl::MutexLock lock(&mu_);
      auto free = [this, limit]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return !idle_.empty() || open_ < limit;
      };
      if (!mu_.AwaitWithTimeout(
              absl::Condition(&free),
              absl::FromChrono(
                  std::chrono::duration_cast<std::chrono::nanoseconds>(kCommandTimeout)))) {
        return Unavailable("connect", absl::StrCat("all ", limit, " connections stayed busy for ",
                                                   kCommandTimeout.count(), " ms"));
      }
      if (idle_.empty()) {
        ++open_;  // this call's new connection (uncounted by ~Conn, also when Connect fails)
      } else {
        c = std::move(idle_.back());
        idle_.pop_back();
      }
    }
    // A failed Connect destroyed its Conn, which uncounted the slot.
    if (c == nullptr) return Connect();
    if (c->PeerClosed()) continue;  // Redis restarted or dropped it: not worth a failed call
    return c;
  }
}

void RedisStore::Release(std::unique_ptr<Conn> c) {
  if (c == nullptr || c->broken) return;  // destroyed here: ~Conn uncounts it
  {
    absl::MutexLock lock(&mu_);
    if (idle_.size() < kPoolSize) {
      idle_.push_back(std::move(c));
      return;
    }
  }
  // The pool is full: c is closed here, outside mu_ (~Conn takes it).
}

absl::Status RedisStore::RunBatch(const std::vector<StoreWrite>& batch, bool check,
                                  std::vector<WriteOutcome>* outcomes) {
  if (outcomes != nullptr) outcomes->assign(batch.size(), WriteOutcome{});
  if (batch.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::unique_ptr<Conn> c, Acquire(Use::kCommit));
  const std::string nkeys = absl::StrCat(batch.size());
  const std::string seed = absl::StrCat(absl::ToUnixMicros(absl::Now()));
  std::vector<std::string> numbers;  // expectations and TTLs, kept alive for the argv
  numbers.reserve(batch.size() * 2);
  for (const StoreWrite& w : batch) {
    numbers.push_back(check && w.expect != kAnyVersion ? absl::StrCat(w.expect) : "");
    numbers.push_back(absl::StrCat(w.value.has_value() ? std::max<int64_t>(0, w.ttl_ms) : 0));
  }
  std::vector<absl::string_view> args;
  args.reserve(4 + batch.size() * 5);
  args.push_back("EVALSHA");
  args.push_back(c->script_sha);
  args.push_back(nkeys);
  for (const StoreWrite& w : batch) args.push_back(w.key);
  args.push_back(seed);
  for (size_t i = 0; i < batch.size(); ++i) {
    const StoreWrite& w = batch[i];
    args.push_back(w.value.has_value() ? "p" : "d");
    args.push_back(numbers[2 * i]);
    args.push_back(numbers[2 * i + 1]);
    // (A delete's value is "", not a null view: hiredis copies each argument with memcpy.)
    args.push_back(w.value.has_value() ? absl::string_view(*w.value) : absl::string_view(""));
  }
  Reply r = c->Command(args);
  if (r != nullptr && r->type == REDIS_REPLY_ERROR &&
      absl::StartsWith(ReplyString(r.get()), "NOSCRIPT")) {
    // Redis restarted (or SCRIPT FLUSH): load the script again and run it once more.
    Reply load = c->Command({"SCRIPT", "LOAD", kBatchScript});
    if (load != nullptr && load->type == REDIS_REPLY_STRING) {
      c->script_sha = std::string(ReplyString(load.get()));
      args[1] = c->script_sha;
      r = c->Command(args);
    }
  }
  if (r == nullptr) {
    // The connection failed: whether Redis ran the script is unknown. The caller treats the
    // commit as failed; a write that did land only makes the next compare-and-set conflict.
    return Unavailable("commit", c->Error());
  }
  Release(std::move(c));
  if (r->type == REDIS_REPLY_ERROR) return Unavailable("commit", ReplyString(r.get()));
  if (r->type != REDIS_REPLY_ARRAY || r->elements != batch.size() * 3) {
    return Unavailable("commit", "unexpected reply to the batch script");
  }
  if (outcomes == nullptr) return absl::OkStatus();
  for (size_t i = 0; i < batch.size(); ++i) {
    const redisReply* flag = r->element[3 * i];
    const redisReply* version = r->element[3 * i + 1];
    const redisReply* current = r->element[3 * i + 2];
    WriteOutcome& o = (*outcomes)[i];
    o.conflict = flag->type == REDIS_REPLY_INTEGER && flag->integer != 0;
    if (version->type != REDIS_REPLY_STRING ||
        !absl::SimpleAtoi(ReplyString(version), &o.version)) {
      return Unavailable("commit", "unexpected version in the reply to the batch script");
    }
    if (o.conflict && current->type == REDIS_REPLY_STRING) {
      o.current = std::string(ReplyString(current));
    }
  }
  return absl::OkStatus();
}

absl::Status RedisStore::Commit(const std::vector<StoreWrite>& batch) {
  return RunBatch(batch, /*check=*/false, nullptr);
}

absl::Status RedisStore::CommitVersioned(const std::vector<StoreWrite>& batch,
                                         std::vector<WriteOutcome>& outcomes) {
  return RunBatch(batch, /*check=*/true, &outcomes);
}

absl::StatusOr<std::optional<VersionedValue>> RedisStore::GetVersioned(absl::string_view key) {
  ASSIGN_OR_RETURN(std::unique_ptr<Conn> c, Acquire());
  Reply r = c->Command({"HMGET", key, "v", "d"});
  if (r == nullptr) return Unavailable("get", c->Error());
  Release(std::move(c));
  if (r->type == REDIS_REPLY_ERROR) return Unavailable("get", ReplyString(r.get()));
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
    return Unavailable("get", "unexpected reply to HMGET");
  }
  const redisReply* v = r->element[0];
  const redisReply* d = r->element[1];
  if (v->type != REDIS_REPLY_STRING || d->type != REDIS_REPLY_STRING) return std::nullopt;
  VersionedValue out;
  if (!absl::SimpleAtoi(ReplyString(v), &out.version)) {
    return absl::DataLossError(
        absl::StrCat(Describe(), ": key '", key, "' has a version that is not a number"));
  }
  out.value = std::string(ReplyString(d));
  return out;
}

absl::StatusOr<std::optional<std::string>> RedisStore::Get(absl::string_view key) {
  ASSIGN_OR_RETURN(std::optional<VersionedValue> v, GetVersioned(key));
  if (!v.has_value()) return std::nullopt;
  return std::move(v->value);
}

absl::Status RedisStore::Scan(absl::string_view prefix, ScanFn fn) {
  ASSIGN_OR_RETURN(std::unique_ptr<Conn> c, Acquire());
  const std::string pattern = MatchPattern(prefix);
  std::vector<std::string> keys;
  std::string cursor = "0";
  do {
    Reply r = c->Command({"SCAN", cursor, "MATCH", pattern, "COUNT", "1000"});
    if (r == nullptr) return Unavailable("scan", c->Error());
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_ARRAY) {
      return Unavailable(
          "scan", r->type == REDIS_REPLY_ERROR ? ReplyString(r.get()) : "unexpected reply to SCAN");
    }
    cursor = std::string(ReplyString(r->element[0]));
    const redisReply* batch = r->element[1];
    for (size_t i = 0; i < batch->elements; ++i) {
      absl::string_view k = ReplyString(batch->element[i]);
      if (absl::StartsWith(k, prefix) && k != kCounterKey) keys.emplace_back(k);
    }
  } while (cursor != "0");
  std::sort(keys.begin(), keys.end());
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());  // SCAN may repeat a key
  for (size_t start = 0; start < keys.size(); start += kScanChunk) {
    const size_t end = std::min(keys.size(), start + kScanChunk);
    for (size_t i = start; i < end; ++i) {
      const char* argv[] = {"HGET", keys[i].data(), "d"};
      const size_t lens[] = {4, keys[i].size(), 1};
      if (redisAppendCommandArgv(c->ctx.get(), 3, argv, lens) != REDIS_OK) {
        return Unavailable("scan", c->Error());
      }
    }
    for (size_t i = start; i < end; ++i) {
      void* raw = nullptr;
      if (redisGetReply(c->ctx.get(), &raw) != REDIS_OK) return Unavailable("scan", c->Error());
      Reply r(static_cast<redisReply*>(raw));
      if (r->type == REDIS_REPLY_NIL) continue;  // deleted or expired since the SCAN
      if (r->type != REDIS_REPLY_STRING) {
        return absl::DataLossError(
            absl::StrCat(Describe(), ": key '", keys[i], "' is not a session record"));
      }
      if (absl::Status st = fn(keys[i], ReplyString(r.get())); !st.ok()) {
        // The rest of the chunk's replies are still on the connection: do not reuse it.
        return st;
      }
    }
  }
  Release(std::move(c));
  return absl::OkStatus();
}

}  // namespace aaren

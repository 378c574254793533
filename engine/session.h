// SPDX-License-Identifier: Apache-2.0
// Session and Work: the engine's records of a live session and of one queued operation on it.
// Both are owned by the engine and touched only under its lock, except the state of a session
// whose work is in the scheduler's current Forward (SessionState::kRunning), which only that
// Forward touches until the scheduler commits. A session's state lives in its model's backend's
// StateMemory and its last output row in host memory, both in a StatePool slot (SessionStore).
#ifndef AAREN_ENGINE_SESSION_H_
#define AAREN_ENGINE_SESSION_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/mca.h"
#include "engine/input_validation.h"
#include "engine/session_id.h"
#include "engine/token_sampler.h"

namespace aaren {

struct ServedModel;
struct Session;
struct GenerateFlow;  // engine.h

// Sessions belong to tenants: a session id names a session only within its tenant's namespace,
// and another tenant's lookup of it finds nothing. With authentication off every caller is the
// anonymous tenant "". Tenant names match [A-Za-z0-9._-]{1,64} (server/auth/tokens_file.h).
inline constexpr absl::string_view kAnonymousTenant = "";

// Names a session: the tenant that owns it and its id in that tenant's namespace.
struct SessionRef {
  std::string tenant;
  std::string id;

  SessionRef() = default;
  SessionRef(std::string tenant_name, std::string session_id)
      : tenant(std::move(tenant_name)), id(std::move(session_id)) {}
  // Implicit on purpose: a bare id names a session of the anonymous tenant (no authentication),
  // which is what in-process callers (tests, benchmarks, tools) mean.
  SessionRef(std::string session_id) : id(std::move(session_id)) {}  // NOLINT
  SessionRef(const char* session_id) : id(session_id) {}             // NOLINT
};

enum class OutputMode : uint8_t { kAll = 0, kLast = 1, kNone = 2 };

// Where a session's slot (state and last output row, see StatePool) lives.
enum class Tier : uint8_t {
  kPool,     // a pool slot (runnable state memory): ready to run
  kHost,     // evicted to a host-tier slot (staging memory); moved back into the pool to run
  kScratch,  // a Score sequence without prefill: a slot of the model's scratch pool (runnable
             // memory), given back when its work ends; the session is never in the store
};

// Life cycle: kIdle <-> kRunning (a tick's Forward is writing its state), kIdle -> kClosed
// (deleted or expired; pending work fails). Transitions are checked (SetState aborts on an
// illegal one: it is a bug, not an input error).
enum class SessionState : uint8_t { kIdle, kRunning, kClosed };

// Shared between an RPC and the work it queued: set when the client cancels or the deadline
// passes; queued work is then dropped and an append in progress is undone.
using CancelFlag = std::atomic<bool>;

struct AppendResult {
  std::vector<float> outputs;  // [n, output_dim] (ALL), [output_dim] (LAST) or empty (NONE)
  int64_t output_dim = 0;
  int64_t position = 0;  // the session's position after the append
  uint64_t uid = 0;      // the incarnation of the id it was applied to (SessionInfo::uid)
  bool replayed = false;
  // Value-projection FLOPs the append spent and what the exact projection costs (equal without
  // MCA); a replay reports the first attempt's counts.
  McaCounts mca;
};
using AppendCallback = absl::AnyInvocable<void(absl::StatusOr<AppendResult>)>;

// What Generate reports per token.
struct GeneratedToken {
  int32_t token = 0;
  int64_t position = 0;
  float logprob = 0.0f;
};

// The state of a Generate call between its tokens.
struct GenerateProgress {
  uint32_t max_tokens = 0;
  uint32_t generated = 0;
  SampleOptions sampling;
  std::mt19937_64 rng;
  absl::flat_hash_set<int32_t> stop_tokens;
  bool prompt_pending = false;  // the prompt is the first span; sampling starts after it
  SampledToken pending;         // the token being appended (valid while length == 1)
  // Shared: a token's completion may run after the Work is gone.
  std::shared_ptr<absl::AnyInvocable<void(const GeneratedToken&)>> on_token;
  absl::AnyInvocable<void(absl::Status)> on_done;
  std::shared_ptr<GenerateFlow> flow;  // optional flow control
  bool stop_requested = false;         // DeleteSession: end at the next token
  // The durability window (Engine::window_) of its last applied span (prompt or token): a
  // failed commit of that window undoes it, and so ends the Generate; of another, leaves it.
  uint64_t last_window = 0;
};

struct Work {
  enum class Kind : uint8_t {
    kAppend,    // append input (chunked over ticks when long)
    kGenerate,  // sample a token from the last output, append it, repeat
    kControl,   // export/fork/delete...: runs under the lock when it reaches the queue's head
  };
  Kind kind = Kind::kAppend;
  SequenceInput input;
  int64_t length = 0;  // tokens in input
  int64_t done = 0;    // tokens already run (chunked appends)
  OutputMode mode = OutputMode::kAll;
  McaOptions mca;       // Span::mca of every chunk (Generate: off)
  McaCounts mca_count;  // summed over the chunks run so far (Generate: since the last token)
  std::optional<int64_t> expected_position;
  uint64_t fingerprint = 0;  // RetryFingerprint(input, mca), for retries
  bool position_checked = false;
  int64_t cursor = 0;           // position of the next token to run
  std::vector<float> outputs;   // ALL: [length, output_dim]; otherwise [output_dim]
  std::vector<float> snapshot;  // the state before the first chunk, when chunked (host copy)
  std::shared_ptr<CancelFlag> cancel;
  bool scored = false;      // a Score sequence (metrics: tokens scored, not appended)
  int64_t enqueued_ns = 0;  // steady clock; for the queue-wait metric
  AppendCallback on_done;
  std::unique_ptr<GenerateProgress> generate;
  // kControl: runs under the engine lock; returns what to run after the lock is released.
  absl::AnyInvocable<absl::AnyInvocable<void()>(Session*)> control;
  Work* next = nullptr;
  Work* queue_tail = nullptr;  // the head of a session's queue only: its last Work
  // Bytes of the engine's memory budget this work holds (its input and outputs), given back
  // when it is destroyed.
  int64_t reserved_bytes = 0;
  std::atomic<int64_t>* budget = nullptr;

  Work() = default;
  Work(const Work&) = delete;
  Work& operator=(const Work&) = delete;
  ~Work() {
    if (budget != nullptr) budget->fetch_sub(reserved_bytes, std::memory_order_relaxed);
  }
  bool cancelled() const { return cancel && cancel->load(std::memory_order_relaxed); }
};

// The last applied append, kept so that a retry returns the same response. Its output rows are
// the session's last output row (one row) or, for an ALL append of several rows only, held by
// the SessionStore out of line (SessionStore::RetryOutputs), so an idle session pays nothing for
// them.
struct AppendRecord {
  int64_t position_before = -1;  // -1: none
  uint64_t fingerprint = 0;
  McaCounts mca;       // what the append reported
  int32_t length = 0;  // --max_sequence_tokens, which bounds an append, is checked to fit
  OutputMode mode = OutputMode::kAll;
};

// Fields are ordered to pack: the id's 17 bytes, then the one-byte ones, then the 4- and 8-byte
// ones, so the record is 128 bytes, the block size of the pool the store allocates it from
// (checked below). 100k idle sessions are 100k of these; what
// only some sessions need lives elsewhere: the LRU links in the store's per-slot table (only
// pool-resident sessions are in the LRU), the work queue's tail in its head Work, multi-row
// retry outputs in the store's side table.
struct Session {
  StoredSessionId id;
  Tier tier = Tier::kPool;
  SessionState state = SessionState::kIdle;
  bool in_ready : 1 = false;  // queued in the scheduler's ready list
  bool in_lru : 1 = false;    // in the store's LRU (then tier is kPool)
  // Durability (engine_durability.cc): the session's record has been put in the StateStore (or
  // is in the batch being committed), so removing it must write a delete; `dirty`: changed since
  // its record was last put.
  bool stored : 1 = false;
  bool dirty : 1 = false;
  // Shared stores: its record is in the commit now running (LoadFromStore leaves it alone).
  bool committing : 1 = false;
  // last_append's output rows are in SessionStore::RetryOutputs.
  bool has_retry_outputs : 1 = false;
  uint32_t tenant = 0;  // SessionStore::InternTenant's index of the owning tenant
  int32_t slot = -1;    // slot in the StatePool of its tier (kScratch: -1 once given back)
  uint32_t idle_ttl_s = 0;
  // Which incarnation of `id` this is: random, fixed at creation. A session deleted and made
  // again under the same id has another uid, so a Stream attached to the old one cannot append
  // to the new one.
  uint64_t uid = 0;
  const ServedModel* model = nullptr;
  int64_t position = 0;
  int64_t created_ms = 0;
  int64_t last_used_ms = 0;
  Work* head = nullptr;  // pending work, in arrival order (head->queue_tail: the last)
  // Shared stores: the store version of the record this copy was loaded from or last wrote
  // (0: none); the next write expects it (compare-and-set).
  uint64_t version = 0;
  AppendRecord last_append;

  bool has_work() const { return head != nullptr; }
  // The head append has run some chunks: its state must stay where it is until it finishes.
  bool pinned() const { return head != nullptr && head->done > 0; }

  void Push(Work* w) {
    w->next = nullptr;
    w->queue_tail = nullptr;
    if (head == nullptr) {
      head = w;
    } else {
      head->queue_tail->next = w;
    }
    head->queue_tail = w;
  }
  std::unique_ptr<Work> Pop() {
    Work* w = head;
    head = w->next;
    if (head != nullptr) head->queue_tail = w->queue_tail;
    w->next = w->queue_tail = nullptr;
    return std::unique_ptr<Work>(w);
  }
  // Unlinks `w`, which follows `prev` in the queue (never the head).
  void Unlink(Work* prev, Work* w) {
    prev->next = w->next;
    if (head->queue_tail == w) head->queue_tail = prev;
    w->next = nullptr;
  }
  void SetState(SessionState next);
};
// SessionStore allocates Sessions from a std::pmr pool whose block sizes (libstdc++) step from
// 112 to 128 to 192 bytes: a field more must come with one fewer.
static_assert(sizeof(Session) <= 128, "Session grew past its pool block (see above)");

}  // namespace aaren

#endif  // AAREN_ENGINE_SESSION_H_

// SPDX-License-Identifier: Apache-2.0
// Engine: sessions, their state tiers and the step scheduler (continuous batching) over the
// backends of a ModelRegistry. Transports (server/) call it; it knows nothing of gRPC.
//
// Scheduling policy. Every operation on a session is queued on that session and applied in
// arrival order, exactly once. One scheduler thread runs ticks; a tick takes the head operation
// of every session that has one and runs all of them as one Backend::Forward per model:
//   1. interactive work first: appends with at most EngineOptions::interactive_tokens tokens
//      left (streaming steps), whole, in arrival order, up to max_batch_tokens - reserve;
//   2. then bulk work (long appends, prefixes, Score sequences), in arrival order, cut into
//      chunks that fill the rest of max_batch_tokens. `reserve` is a quarter of
//      max_batch_tokens when bulk work is waiting (so it always progresses) and 0 otherwise.
// A long prefill therefore runs over several ticks and streaming appends of other sessions are
// never queued behind it for more than one tick. With batch_delay_us > 0 a tick waits that long
// for more work to arrive unless max_batch_tokens tokens are already waiting; 0 runs at once
// (work that arrives during a Forward is batched into the next tick anyway).
//
// Session states live in each model's backend's StateMemory (core/state_memory.h; device memory
// for CUDA): the engine hands them to Forward as Span::state and otherwise only copies them
// through that StateMemory (new sessions, export/import, fork, tier moves, chunk snapshots).
// A StateMemory error fails the request that needed the copy with its status.
//
// Completion callbacks run either inline, before the request method returns (errors found at
// once: validation, unknown session), or later on the scheduler thread. They must not block
// and must not call back into the Engine synchronously with a lock of their own held.
//
// Durability (DESIGN.md 7.2; engine_durability.cc). With a StateStore, every change to a
// session (append, prefix, prefill, Generate token, create, fork, import, delete, expiry) marks
// it; the scheduler writes the marked sessions' records (and deletes of removed ones) as one
// StateStore::Commit:
//   kCheckpoint: every checkpoint_interval_ms and at Shutdown. Replies go out at once; kill -9
//     loses at most the changes of the last interval. A failed commit is retried at the next.
//     The scheduler takes the records between ticks and a commit thread writes them, so ticks
//     go on while the store works: a slow or stalled store (a long fsync, Redis paused up to
//     its command timeout) delays only the checkpoint, never a reply. One checkpoint is in
//     flight at a time; the scheduler settles it (versions, lost compare-and-sets) between
//     ticks. Shutdown waits for it, then writes the rest on the scheduler thread.
//   kAck: after every tick (one commit, one sync, however many sessions the tick touched).
//     Replies that reflect a change (each append's, each generated token, CreateSession,
//     OpenSession that creates, prefill Score, Fork, Import, Delete) are released only when the
//     commit returned OK. When it fails, each of those calls fails with UNAVAILABLE naming the
//     store and its session is put back as it was before the call (created ones removed,
//     deleted ones restored).
// Recover() loads the store's live sessions at start-up.
//
// Shared stores (StateStore::Shared(): Redis behind several replicas, DESIGN.md 7.3). Any
// replica serves any session: a call naming a session this engine does not hold loads its
// record from the store first (LoadFromStore), and every write is a compare-and-set on the
// version this copy was loaded with or last wrote, so two replicas never both replace one state.
// A replica that loses (its copy was stale: another replica advanced the session meanwhile)
// takes the store's record in place of its copy, and the calls of that commit fail instead of
// being applied: ABORTED naming the session's position now (retry; with expected_position a
// retry of an append that did land replays), ALREADY_EXISTS for a create of an id another
// replica made, NOT_FOUND for a session another replica deleted. With kAck no reply ever
// reflects a state that lost; with kCheckpoint replies sent before the losing commit may (use
// kAck with replicas). Recover() loads nothing: sessions come from the store on first use.
// Without kAck a commit carries at most kMaxCheckpointWrites records (or kMaxCheckpointBytes)
// and the rest go in the commits right after it: the scheduler takes each batch between ticks
// (reading and encoding 100k records held every stream back ~55 ms), and Redis runs a commit as
// one script that every replica waits behind (a checkpoint or drain of 150k records in one ran
// past the store's command timeout, so it failed every time). kAck's commit is one tick's work,
// bounded by --max_batch_tokens.
//
// Thread-safety: every public method may be called from any thread.
#ifndef AAREN_ENGINE_ENGINE_H_
#define AAREN_ENGINE_ENGINE_H_

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/functional/any_invocable.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "engine/engine_observer.h"
#include "engine/served_model.h"
#include "engine/session.h"
#include "engine/session_store.h"
#include "engine/store/session_record.h"
#include "engine/store/state_store.h"

namespace aaren {

// --durability (see the top of this file).
enum class Durability : uint8_t { kNone, kCheckpoint, kAck };

struct EngineOptions {
  StoreLimits store;
  // Where session records outlive the process (null: nowhere); must outlive the engine.
  // durability must be kNone without a store and something else with one.
  StateStore* state_store = nullptr;
  Durability durability = Durability::kNone;
  int64_t checkpoint_interval_ms = 1000;  // kCheckpoint
  // Shared stores: this server's name in the records it writes (SessionRecord::writer).
  std::string replica_id;
  int64_t max_batch_tokens = 8192;  // tokens per Forward (per tick and model)
  int64_t batch_delay_us = 0;
  int64_t max_sequence_tokens = 1 << 20;  // per sequence, prefix or append
  int64_t max_request_tokens = 1 << 21;   // per Score call, all sequences together
  // The largest reply message the transport can send (--max_message_bytes); 0: no limit. A
  // Score or append whose outputs cannot fit is refused before any work.
  int64_t max_reply_bytes = 0;
  uint32_t max_generate_tokens = 4096;  // Generate's max_tokens may not exceed it
  // Memory the engine may hold for sessions (state, last output row, bookkeeping; every tier)
  // and for queued work (inputs and outputs); 0: no limit. New sessions and work beyond it are
  // refused with RESOURCE_EXHAUSTED naming --memory_budget_bytes.
  int64_t memory_budget_bytes = 0;
  int64_t interactive_tokens = 16;
  EngineObserver* observer = nullptr;  // optional; must outlive the engine
};

struct SessionInfo {
  std::string session_id;
  uint64_t uid = 0;  // Session::uid: which incarnation of session_id this is
  std::string model;
  int64_t position = 0;
  uint64_t state_bytes = 0;
  uint32_t idle_ttl_s = 0;
  Tier tier = Tier::kPool;
  int64_t created_ms = 0;
  int64_t last_used_ms = 0;
};

struct SequenceOutput {
  std::vector<float> outputs;  // as AppendResult::outputs
  int64_t output_dim = 0;
  std::string session_id;  // prefill only
  int64_t position = 0;
  McaCounts mca;  // the sequence's value-projection FLOPs, as AppendResult::mca
};

// A session's state, portable between engines serving the same model.
struct SessionSnapshot {
  static constexpr uint32_t kFormatVersion = 1;
  uint32_t format_version = kFormatVersion;
  std::string model;
  std::string config_hash;
  int64_t position = 0;
  StateLayout layout;
  std::vector<float> state;  // layout.total_floats()
  int64_t output_dim = 0;
  std::vector<float> last_output;  // output_dim values, or empty at position 0
};

// Flow control between a Generate call and the transport sending its tokens: the engine samples
// the next token only while fewer than `window` tokens are unacknowledged, and the transport
// calls Engine::AckGenerated once per token it has sent. So a client that does not read stops
// generation instead of filling memory. Shared by the transport and the engine.
struct GenerateFlow {
  explicit GenerateFlow(int64_t window_tokens) : window(window_tokens) {}
  const int64_t window;
  int64_t unacked = 0;        // guarded by the engine's lock
  Session* parked = nullptr;  // the session, while its Generate waits for acks (engine lock)
};

// What Engine::Recover found in the store.
struct RecoveryReport {
  int64_t records = 0;      // session records in the store
  int64_t recovered = 0;    // live sessions loaded
  int64_t expired = 0;      // idle longer than their TTL: deleted from the store
  int64_t other_model = 0;  // for a model not served here or with another config_hash: kept
  int64_t corrupt = 0;      // failed their checksum or format check: kept, not loaded
  int64_t no_room = 0;      // valid, but the tiers or limits had no room: kept, not loaded
  double seconds = 0;
  std::vector<std::string> problems;  // the first few skipped records, with why
  int64_t skipped() const { return other_model + corrupt + no_room; }
};

struct EngineStats {
  uint64_t ticks = 0;
  uint64_t forward_calls = 0;
  uint64_t tokens_run = 0;
  StoreCounts store;
};

class Engine {
 public:
  // Without kAck: the most records (deletes included) one commit writes, and the most bytes of
  // records (a single larger record still goes, alone).
  static constexpr size_t kMaxCheckpointWrites = 1024;
  static constexpr int64_t kMaxCheckpointBytes = 8 << 20;

  // `models` must outlive the engine. Starts the scheduler thread.
  Engine(const ModelRegistry* models, EngineOptions options);
  ~Engine();  // Shutdown()
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  const ModelRegistry& models() const { return *models_; }
  const EngineOptions& options() const { return options_; }

  // Every call names the tenant it acts for (SessionRef, session.h): sessions it creates belong
  // to that tenant, and it sees only that tenant's sessions.
  struct ScoreParams {
    std::string tenant;
    std::string model;
    std::vector<SequenceInput> sequences;
    OutputMode mode = OutputMode::kAll;
    McaOptions mca;  // for every sequence (core/mca.h)
    bool prefill = false;
    uint32_t idle_ttl_s = 0;
    std::shared_ptr<CancelFlag> cancel;
  };
  // Scores every sequence from the empty state; with prefill each becomes a new session. All
  // or nothing: on error no session is created. INVALID_ARGUMENT naming "mca.alpha" for enabled
  // MCA with an alpha that is not finite and >= 0, naming "sequences" and --max_request_tokens
  // for more tokens in all than that; RESOURCE_EXHAUSTED naming --max_message_bytes when the
  // outputs cannot fit one reply, --memory_budget_bytes when they cannot be held. Every check
  // is made before any work.
  void Score(ScoreParams params,
             absl::AnyInvocable<void(absl::StatusOr<std::vector<SequenceOutput>>)> done);

  struct CreateParams {
    std::string tenant;
    std::string model;
    std::string session_id;  // empty: random
    SequenceInput prefix;    // may be empty
    McaOptions mca;          // for the prefix (errors name "mca.alpha")
    uint32_t idle_ttl_s = 0;
    std::shared_ptr<CancelFlag> cancel;
  };
  // Creates a session and runs its prefix; on a prefix error the session is removed.
  void CreateSession(CreateParams params,
                     absl::AnyInvocable<void(absl::StatusOr<SessionInfo>)> done);

  // Stream open: attaches to `ref` or creates a session (no prefix; ref.id empty: a random
  // id). `model`, when set, must match an attached session's model.
  absl::StatusOr<SessionInfo> OpenSession(const SessionRef& ref, const std::string& model,
                                          bool create_if_missing, uint32_t idle_ttl_s);

  struct AppendParams {
    std::string tenant;
    std::string session_id;
    // When non-zero, the append applies only to this incarnation (SessionInfo::uid) of the
    // session: NOT_FOUND if the session was deleted and made again under the same id.
    uint64_t expected_uid = 0;
    // When set, the session must serve this model: NOT_FOUND ("... serves model ...") otherwise.
    std::string model;
    SequenceInput input;
    std::optional<int64_t> expected_position;
    OutputMode mode = OutputMode::kAll;
    // MCA for the appended tokens; part of what a retry must repeat (RetryFingerprint). Samples
    // are keyed by absolute position, so appending token by token with the same options gives
    // what one longer append (or Score) gives. Errors name "mca.alpha".
    McaOptions mca;
    std::shared_ptr<CancelFlag> cancel;
  };
  // Appends in order, once (expected_position). Refused before any work: RESOURCE_EXHAUSTED
  // naming --max_message_bytes when the outputs cannot fit one reply (output mode ALL),
  // --memory_budget_bytes; OUT_OF_RANGE when the position would pass kMaxPosition.
  void Append(AppendParams params, AppendCallback done);

  struct GenerateParams {
    std::string tenant;
    std::string session_id;
    uint32_t max_tokens = 0;
    SampleOptions sampling;
    uint64_t seed = 0;
    SequenceInput prompt;
    std::vector<int32_t> stop_tokens;
    std::shared_ptr<CancelFlag> cancel;
    // Optional flow control (see GenerateFlow); without it tokens are produced as fast as the
    // model runs.
    std::shared_ptr<GenerateFlow> flow;
  };
  // on_token runs once per generated token (scheduler thread), then on_done once.
  // INVALID_ARGUMENT naming --max_generate_tokens when max_tokens exceeds it. While it runs,
  // later operations on the session wait behind it (each still honours its own cancellation);
  // DeleteSession ends it at its next token (NOT_FOUND: the session was deleted).
  void Generate(GenerateParams params, absl::AnyInvocable<void(const GeneratedToken&)> on_token,
                absl::AnyInvocable<void(absl::Status)> on_done);
  // The transport sent `tokens` of a flow-controlled Generate: generation may go on.
  void AckGenerated(const std::shared_ptr<GenerateFlow>& flow, int64_t tokens = 1);

  absl::StatusOr<SessionInfo> GetSession(const SessionRef& ref);
  // What a session made now on `m` with `input` appended (output mode `mode`) would be refused
  // for, checked as CreateSession and Append check it: the reply's size (RESOURCE_EXHAUSTED
  // naming `field` and --max_message_bytes) and the memory budget. For a caller that must delete
  // before it creates (KServe v2's START on an existing sequence), so that it can refuse first.
  // Not a reservation: a concurrent call may take the budget before the create.
  // `replacing`: a session the caller deletes first (its memory counts as free).
  absl::Status CheckNewSessionCosts(const ServedModel& m, const SequenceInput& input,
                                    OutputMode mode, absl::string_view field,
                                    const SessionRef& replacing);
  // Queued behind the session's pending work; fails that work's successors with NOT_FOUND. A
  // Generate running or queued on the session is ended at its next token instead of waited for
  // (also when the delete itself then fails: its deadline passes or, under kAck, its commit).
  // Control operations (delete, fork, export) honour `cancel`: one cancelled (or past its
  // deadline) while queued never runs.
  // `expected_uid` (non-zero): delete only that incarnation of the id (NOT_FOUND otherwise).
  // With a shared store and that incarnation held here, the store is not read first (KServe
  // v2's END runs this from the scheduler thread, after its append's commit): the delete's
  // compare-and-set still refuses to remove a record another replica advanced meanwhile: the
  // delete fails ABORTED and this copy becomes that record (same uid), which a second try
  // deletes.
  void DeleteSession(const SessionRef& ref, absl::AnyInvocable<void(absl::Status)> done,
                     std::shared_ptr<CancelFlag> cancel = nullptr, uint64_t expected_uid = 0);
  // The fork belongs to ref's tenant.
  void ForkSession(const SessionRef& ref, const std::string& new_session_id, uint32_t idle_ttl_s,
                   absl::AnyInvocable<void(absl::StatusOr<SessionInfo>)> done,
                   std::shared_ptr<CancelFlag> cancel = nullptr);
  void ExportSession(const SessionRef& ref,
                     absl::AnyInvocable<void(absl::StatusOr<SessionSnapshot>)> done,
                     std::shared_ptr<CancelFlag> cancel = nullptr);
  // Makes `ref` (ref.id empty: a random id) from a snapshot. NOT_FOUND naming snapshot.model
  // when no such model is served; INVALID_ARGUMENT naming the snapshot field for any other
  // mismatch (format_version, config_hash, layout, sizes, non-finite values, a position past
  // kMaxPosition, a state no sequence can produce: core/state_bounds.h).
  absl::StatusOr<SessionInfo> ImportSession(const SessionSnapshot& snapshot, const SessionRef& ref,
                                            uint32_t idle_ttl_s);

  // A call on `ref` was cancelled or passed its deadline: its queued work is dropped now rather
  // than when it reaches the head of the session's queue (which a long Generate may hold).
  void SweepCancelled(const SessionRef& ref);

  // Loads every live session of options().state_store (none: an empty report). Call once,
  // before serving. Expired records are deleted from the store; records for another model or
  // config_hash, damaged ones and ones that do not fit are kept and counted. A store that
  // cannot be read (DATA_LOSS for damaged files) is an error.
  absl::StatusOr<RecoveryReport> Recover();

  // Stops accepting work (UNAVAILABLE), finishes what is queued, writes every changed session
  // to the store, stops the scheduler.
  void Shutdown();
  // After Shutdown: OK when every change reached the store (always, without a store);
  // otherwise UNAVAILABLE with how many changed sessions and deletes were not written, the
  // store, and its last error (the drain's commits failed: a store down at SIGTERM).
  absl::Status UnwrittenChanges();
  EngineStats stats();

  // Runs `fn` now on this thread, unless this is the scheduler thread and the store is shared:
  // then on one of kStoreCallThreads threads, in order of arrival. For a caller that starts an
  // engine call from a completion (completions run on the scheduler thread): with a shared
  // store, every entry point not bound to this engine's copy of its session first reads the
  // store, and that round trip (up to the store's timeout while it stalls) would hold every
  // session's tick back. What waits here is bounded by the calls in flight that queued it.
  void RunOffScheduler(absl::AnyInvocable<void()> fn);
  static constexpr int kStoreCallThreads = 4;

 private:
  struct Picked {
    Session* session;
    Work* work;
    int64_t take;  // tokens run this tick
    float* state;  // the session's state in runnable memory (taken under the lock): Span::state
    absl::Status status;
    McaCounts mca;  // Span::mca_counts of this chunk (added to the work's on success)
  };
  using Completion = absl::AnyInvocable<void()>;

  // Request side (engine.cc).
  absl::Status CheckAcceptingLocked() const;
  // Before a call reads a shared store (LoadFromStore): what refuses it anyway, so that it is
  // refused without the round trip (a drain, and `new_bytes` of sessions the budget cannot
  // hold). Checked again, under the lock, once the read is done.
  absl::Status CheckBeforeStoreRead(int64_t new_bytes = 0);
  void EnqueueLocked(Session* s, std::unique_ptr<Work> w);
  SessionInfo InfoLocked(const Session* s) const;
  // GetSession without asking a shared store first: the copy held here.
  absl::StatusOr<SessionInfo> LocalSessionInfo(const SessionRef& ref);
  absl::StatusOr<Session*> FindLocked(const SessionRef& ref, absl::string_view field);
  // `bound_uid`: see LoadFromStore.
  absl::StatusOr<const ServedModel*> ModelOfSession(const SessionRef& ref, uint64_t bound_uid = 0);
  // `bound_uid`: see LoadFromStore.
  void Control(const SessionRef& ref, absl::string_view field,
               absl::AnyInvocable<Completion(Session*)> op,
               absl::AnyInvocable<void(absl::Status)> on_error, std::shared_ptr<CancelFlag> cancel,
               uint64_t bound_uid = 0);
  std::unique_ptr<Work> NewAppendWork(SequenceInput input, OutputMode mode, McaOptions mca,
                                      std::shared_ptr<CancelFlag> cancel, int64_t n_features);
  // Reply bytes of outputs for `tokens` tokens in `mode` (with a message overhead), checked
  // against max_reply_bytes: RESOURCE_EXHAUSTED naming `field` and --max_message_bytes.
  absl::Status CheckReplyBytes(const ServedModel& m, int64_t tokens, OutputMode mode,
                               absl::string_view field) const;
  // Reserves `bytes` of the memory budget for `w` (released when the Work is destroyed):
  // RESOURCE_EXHAUSTED naming --memory_budget_bytes when they do not fit.
  absl::Status ReserveLocked(Work& w, int64_t bytes);
  absl::Status CheckBudgetLocked(int64_t bytes) const;
  // Drops cancelled work queued behind the head (which may be running).
  void SweepQueueLocked(Session* s, std::vector<Completion>& completions);
  // Removes the tenant's sessions `ids` now (their queued work fails with NOT_FOUND): how a
  // failed CreateSession or prefill Score undoes the sessions it made before it replies. Takes
  // the lock; sessions running in a Forward are skipped (none is, from a completion).
  // `uid` != 0: only a session with that uid (not one another replica made under the id and
  // this engine loaded meanwhile).
  void RemoveSessionsNow(const std::string& tenant, const std::vector<std::string>& ids,
                         uint64_t uid = 0);

  // Scheduler side (engine_scheduler.cc).
  void SchedulerLoop();
  // Applies the session's ready head operations that need no Forward. Leaves a runnable
  // append/generate at the head, if any (kRunnable), or stops after the first head it failed
  // (kNextTick): that failure's completion runs before the next tick looks at the session, so a
  // stream it ends has cancelled what it queued behind (sharing its CancelFlag) before any of it
  // is applied. kRemoved: the session was removed.
  enum class Advance { kRemoved, kRunnable, kNextTick };
  Advance AdvanceLocked(Session* s, std::vector<Completion>& completions);
  void SelectLocked(std::vector<Picked>& picked, std::vector<Completion>& completions);
  void RunForward(std::vector<Picked>& picked);
  void CommitLocked(std::vector<Picked>& picked, std::vector<Completion>& completions);
  void FinishAppendLocked(Session* s, Work* w, std::vector<Completion>& completions);
  void FailHeadLocked(Session* s, absl::Status status, std::vector<Completion>& completions);
  // Turns a work item's callback into a completion reporting `status`.
  static void FailWorkLocked(Work& w, absl::Status status, std::vector<Completion>& completions);
  void ReadyLocked(Session* s);
  // A scratch session whose work has ended gives its slot back.
  void ReleaseScratchLocked(Session* s);

  // Durability (engine_durability.cc).
  using HeldReply = absl::AnyInvocable<void(const absl::Status&)>;
  bool durable() const { return options_.state_store != nullptr; }
  bool ack() const { return options_.durability == Durability::kAck; }
  bool shared() const { return shared_; }
  // Shared stores: brings this engine's copy of the session `ref` names up to the store's
  // version before a call uses it (one store read): loads a session held only by the store,
  // replaces an idle copy another replica has advanced since, drops one another replica
  // deleted. OK also when the session exists nowhere (the caller's lookup then says NOT_FOUND);
  // UNAVAILABLE when the store cannot be read. A copy with work queued is left to the
  // compare-and-set of its next commit. `bound_uid` != 0 (a Stream bound to its session, a
  // v2 sequence's END): no read while that session is here. Call without mu_ held.
  absl::Status LoadFromStore(const SessionRef& ref, uint64_t bound_uid = 0);
  // The key a held reply of `s` is filed under (shared stores; "" otherwise).
  std::string HoldKeyLocked(const Session* s) const;
  // `s` changed: its record goes into the next commit.
  void MarkDirtyLocked(Session* s);
  // kAck: before an operation changes `s`, keep what to put back if its commit fails (a session
  // that was never stored is removed instead).
  void CaptureUndoLocked(Session* s);
  // Sends `reply` now (as a completion) or, with kAck and a durable change, after the commit:
  // then it is called with OK or the store's error.
  // `key`: HoldKeyLocked of the session (a lost compare-and-set fails only its replies).
  void ReplyLocked(bool changed, std::string key, HeldReply reply,
                   std::vector<Completion>& completions);
  // The same for control operations: the completion to run now (a no-op when held).
  Completion ReplyLaterLocked(bool changed, std::string key, HeldReply reply);
  // kAck, request threads: waits until the change just made to session `key` is committed; its
  // status.
  absl::Status AwaitDurableLocked(std::unique_lock<std::mutex>& lock, const std::string& key);
  // Shared stores, a write of `s` lost its compare-and-set: takes the store's record (`current`,
  // version `version`) in place of the copy, or drops the copy when the store has none. Returns
  // the status the session's calls of that commit fail with.
  absl::Status TakeStoreCopyLocked(Session* s, const std::optional<std::string>& current,
                                   uint64_t version, bool was_create,
                                   std::vector<Completion>& completions);
  // Removes `s` from this engine without writing a delete (the store's record is not ours).
  void ForgetLocked(Session* s, const absl::Status& status, std::vector<Completion>& completions);
  // Fails s's queued work with `status`, takes it off the ready list and removes it (a delete
  // is filed when s->stored).
  void RemoveFailingWorkLocked(Session* s, const absl::Status& status,
                               std::vector<Completion>& completions);
  // SessionStore's remove hook.
  void OnRemovedLocked(Session* s);
  absl::StatusOr<SessionRecord> RecordLocked(const Session* s);
  // Makes a session from `r`; replaces `existing` in place when given (undo).
  absl::Status RestoreRecordLocked(const SessionRecord& r, Session* existing);
  // Writes the changes marked so far (releases the lock while the store works) and delivers or
  // fails the held replies. Due: kAck every tick; kCheckpoint every interval; `force` at once.
  // True when the commit succeeded but was capped (kMaxCheckpointWrites): changes remain,
  // and the next commit is already wanted.
  bool CommitDurableLocked(std::unique_lock<std::mutex>& lock, bool force);
  bool CommitDueLocked(int64_t now_ms) const;
  // CommitDurableLocked's three steps (engine_commit.cc): the batch taken from the marks under
  // mu_ (null: nothing due, or nothing to write), written without mu_, and settled under mu_
  // (completions run with mu_ released; returns CommitDurableLocked's value).
  struct CommitJob;
  std::unique_ptr<CommitJob> CaptureCommitLocked(bool force);
  void WriteCommit(CommitJob& job);
  bool SettleCommitLocked(std::unique_lock<std::mutex>& lock, CommitJob& job);
  // The scheduler's commit between ticks: kAck (and every commit once stopping_) inline;
  // kCheckpoint handed to the commit thread when due and none is in flight. Returns what
  // CommitDurableLocked does for an inline commit, false for a handed-over one.
  bool CommitOrStartLocked(std::unique_lock<std::mutex>& lock, bool force);
  // kCheckpoint: settles the commit the commit thread has written (no-op otherwise); with
  // `wait`, first waits for one in flight to be written.
  void SettleCheckpointLocked(std::unique_lock<std::mutex>& lock, bool wait);
  // A delete of `key` is filed or in a commit not settled yet: the record the store still holds
  // there is the deleted session's (LoadFromStore does not load it back).
  bool DeleteUnwrittenLocked(const std::string& key) const;
  // Frees removed sessions, unless a checkpoint in flight still names some of them.
  void FreeRemovedLocked();
  void CommitThreadLoop();

  const ModelRegistry* models_;
  EngineOptions options_;

  std::mutex mu_;
  std::condition_variable cv_;
  SessionStore store_;
  std::deque<Session*> ready_;  // idle sessions with pending work, in arrival order
  int64_t pending_tokens_ = 0;
  std::atomic<int64_t> reserved_bytes_{0};  // queued work's share of memory_budget_bytes
  bool stopping_ = false;
  int64_t next_expiry_ms_ = 0;
  EngineStats stats_;

  // Durability state (engine_durability.cc); all under mu_.
  absl::flat_hash_set<Session*> dirty_;
  // kAck: per session changed in the open window, the record to put back (none: remove it;
  // `made`: the session did not exist before, as opposed to one whose state could not be read).
  struct Undo {
    std::optional<SessionRecord> record;
    bool made = false;
    // A made session whose commit failed while it was half-way through a chunked append: the
    // call that made it was answered with that failure, so no later write acknowledges it.
    bool made_failed = false;
  };
  using UndoMap = absl::flat_hash_map<Session*, Undo>;
  UndoMap undo_;
  // Keys to delete, each with the record a DeleteSession removed (kAck: restored on failure)
  // and the version the delete expects (shared stores).
  struct Tombstone {
    std::optional<SessionRecord> undo;
    uint64_t version = 0;
  };
  absl::flat_hash_map<std::string, Tombstone> tombstones_;
  // One commit's batch and what settling it needs (CaptureCommitLocked).
  struct CommitJob {
    uint64_t window = 0;
    bool more = false;  // capped: changes were left for the next commit
    absl::flat_hash_map<std::string, Tombstone> tombstones;
    std::vector<StoreWrite> batch;  // the deletes (n_tombstones), then written's records
    size_t n_tombstones = 0;
    std::vector<Session*> written;
    // kAck: sessions of this window whose state could not be read (the store is not called),
    // the first such error, every session of the window and their undo.
    std::vector<Session*> unreadable;
    absl::Status read_error;
    std::vector<Session*> window_sessions;
    UndoMap undo;
    std::vector<std::pair<std::string, HeldReply>> held;
    // kAck, shared stores: keys of sessions not written because they were half-way through a
    // chunked append; their held replies stayed in held_.
    absl::flat_hash_set<std::string> deferred;
    // kAck, local stores: sessions made in an open window and written half-way through a chunked
    // append, with the record written (their undo once it lands).
    std::vector<std::pair<Session*, SessionRecord>> made_pinned;
    int64_t bytes = 0;
    // WriteCommit's result.
    bool store_called = false;
    absl::Status status;
    std::vector<WriteOutcome> outcomes;
  };
  std::vector<std::pair<std::string, HeldReply>> held_;  // (HoldKeyLocked, reply)
  uint64_t window_ = 1;                                  // the commit the next change goes into
  uint64_t done_window_ = 0;                             // every commit up to this one has finished
  // Request threads waiting in AwaitDurableLocked, per window: how its commit ended for them
  // (kept until the last of them has read it, however late it wakes).
  struct WindowOutcome {
    int waiting = 0;
    absl::flat_hash_map<std::string, int> waiting_keys;   // how many wait per key
    absl::Status failed;                                  // the commit failed
    absl::flat_hash_map<std::string, absl::Status> lost;  // keys whose compare-and-set lost
    // kAck: keys whose change this commit did not make durable (it met this engine's own
    // earlier write, or the session was half-way through a chunked append), and the commit
    // that carries them now: their callers wait for that one.
    absl::flat_hash_set<std::string> again;
    uint64_t again_window = 0;
  };
  // Marks `keys` of `window`'s waiters as carried by the next commit (window_).
  void WaitAgainLocked(uint64_t window, const absl::flat_hash_set<std::string>& keys);
  std::map<uint64_t, WindowOutcome> waiters_;
  // Shared stores, kCheckpoint: per key, hashes of the records this engine sent in commits that
  // failed without saying whether they applied (a reply lost after Redis ran the batch). A
  // later compare-and-set that conflicts with one of them met this engine's own write, not
  // another replica's: it takes that version and writes again instead of taking the store's
  // copy (which would roll back what was acknowledged since). The newest kMaxUnsureWrites per
  // key; dropped when the key's next commit resolves. Under kAck only creates': there the
  // failed calls were undone here and answered UNAVAILABLE ("may not have been made"), and a
  // changed session's applied record may since have been served by another replica as
  // acknowledged, so the store's copy wins; a failed create's session is removed here and its
  // record, where it landed, deleted (SettleCommitLocked).
  static constexpr size_t kMaxUnsureWrites = 4;
  absl::flat_hash_map<std::string, std::vector<size_t>> unsure_writes_;
  // Whether `current` (the record at `key`) is one of unsure_writes_.
  bool IsUnsureWriteLocked(const std::string& key, const std::optional<std::string>& current);
  const bool shared_;
  bool commit_wanted_ = false;      // a request thread waits (AwaitDurableLocked)
  absl::Status last_commit_error_;  // of the latest commit (OK once one succeeds)
  // Capped commits (kMaxCheckpointWrites): where the next one starts in dirty_ (null: at the
  // beginning) and in tombstones_ (a key not there: at the beginning).
  Session* commit_resume_ = nullptr;
  std::string tombstone_resume_;
  int64_t next_checkpoint_ms_ = 0;
  std::condition_variable durable_cv_;
  // kCheckpoint's commit thread (CommitThreadLoop) and the commit it writes: set by the
  // scheduler, written there without mu_ (`checkpoint_written_` then), settled and cleared by
  // the scheduler. Its Session pointers stay valid while it is set (FreeRemovedLocked).
  std::unique_ptr<CommitJob> checkpoint_job_;
  CommitJob* inline_job_ = nullptr;  // CommitDurableLocked's, while its store call runs
  bool checkpoint_written_ = false;
  bool commit_thread_stop_ = false;
  std::condition_variable commit_thread_cv_;
  std::thread commit_thread_;

  std::thread scheduler_;

  // RunOffScheduler's threads (shared stores only) and their queue.
  void StoreCallLoop();
  std::thread::id scheduler_id_;
  std::mutex store_calls_mu_;
  std::condition_variable store_calls_cv_;
  std::deque<absl::AnyInvocable<void()>> store_calls_;
  bool store_calls_stop_ = false;
  std::vector<std::thread> store_callers_;
};

// Milliseconds since the Unix epoch (session timestamps and TTLs).
int64_t NowUnixMs();
// Nanoseconds of the steady clock (durations).
int64_t SteadyNowNs();

}  // namespace aaren

#endif  // AAREN_ENGINE_ENGINE_H_

// SPDX-License-Identifier: Apache-2.0
// EngineObserver: what the engine reports as it works (the server turns it into metrics). Called
// from the scheduler thread, sometimes with the engine's lock held: implementations must be
// quick and must not call back into the Engine.
#ifndef AAREN_ENGINE_ENGINE_OBSERVER_H_
#define AAREN_ENGINE_ENGINE_OBSERVER_H_

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "core/mca.h"

namespace aaren {

struct ServedModel;

class EngineObserver {
 public:
  virtual ~EngineObserver() = default;
  // One backend Forward of `model`: `tokens` rows; `step` when every span had one token.
  virtual void OnForward(const ServedModel& model, bool step, int64_t tokens, double seconds) = 0;
  // An operation on `model` reached its first Forward `seconds` after it arrived.
  virtual void OnQueueWait(const ServedModel& model, double seconds) = 0;
  // An append (scored = false: to a session) or a Score sequence (scored = true) of `tokens`
  // tokens completed.
  virtual void OnTokens(const ServedModel& model, bool scored, int64_t tokens) = 0;
  // Value-projection FLOPs of an operation that completed: every append, prefix, Score sequence
  // and Generate token, with MCA (spent <= exact) or without (spent == exact), so that
  // spent / exact over all of them is the share of the exact cost actually paid. Called right
  // after OnTokens for the same operation; never for a replayed append (nothing ran). Counts
  // are 0 when the backend does not report them.
  virtual void OnMcaFlops(const ServedModel& model, const McaCounts& counts) {}
  // One StateStore commit of `records` puts and deletes, `bytes` of values, that took `seconds`
  // and ended with `status` (the engine lock is not held).
  virtual void OnStoreCommit(int64_t records, int64_t bytes, double seconds,
                             const absl::Status& status) {}
  // Start-up recovery loaded `recovered` sessions and skipped `skipped` records in `seconds`.
  virtual void OnRecovery(int64_t recovered, int64_t skipped, double seconds) {}
  // Shared stores: one read of a session record that took `seconds` (status: the store's).
  virtual void OnStoreLoad(double seconds, const absl::Status& status) {}
  // Shared stores: a session this server did not hold was loaded from the store; `moved` when
  // another server wrote it last (an ownership move).
  virtual void OnSessionLoaded(bool moved) {}
  // Shared stores: `conflicts` writes of one commit lost their compare-and-set (another server
  // had changed the session).
  virtual void OnStoreConflicts(int64_t conflicts) {}
};

// Hands every report to each of several observers, in order (each must outlive the tee).
class ObserverTee final : public EngineObserver {
 public:
  explicit ObserverTee(std::vector<EngineObserver*> observers) : observers_(std::move(observers)) {}
  void OnForward(const ServedModel& model, bool step, int64_t tokens, double seconds) override {
    for (EngineObserver* o : observers_) o->OnForward(model, step, tokens, seconds);
  }
  void OnQueueWait(const ServedModel& model, double seconds) override {
    for (EngineObserver* o : observers_) o->OnQueueWait(model, seconds);
  }
  void OnTokens(const ServedModel& model, bool scored, int64_t tokens) override {
    for (EngineObserver* o : observers_) o->OnTokens(model, scored, tokens);
  }
  void OnMcaFlops(const ServedModel& model, const McaCounts& counts) override {
    for (EngineObserver* o : observers_) o->OnMcaFlops(model, counts);
  }
  void OnStoreCommit(int64_t records, int64_t bytes, double seconds,
                     const absl::Status& status) override {
    for (EngineObserver* o : observers_) o->OnStoreCommit(records, bytes, seconds, status);
  }
  void OnRecovery(int64_t recovered, int64_t skipped, double seconds) override {
    for (EngineObserver* o : observers_) o->OnRecovery(recovered, skipped, seconds);
  }
  void OnStoreLoad(double seconds, const absl::Status& status) override {
    for (EngineObserver* o : observers_) o->OnStoreLoad(seconds, status);
  }
  void OnSessionLoaded(bool moved) override {
    for (EngineObserver* o : observers_) o->OnSessionLoaded(moved);
  }
  void OnStoreConflicts(int64_t conflicts) override {
    for (EngineObserver* o : observers_) o->OnStoreConflicts(conflicts);
  }

 private:
  std::vector<EngineObserver*> observers_;
};

}  // namespace aaren

#endif  // AAREN_ENGINE_ENGINE_OBSERVER_H_

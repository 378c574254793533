// SPDX-License-Identifier: Apache-2.0
// libFuzzer harness: request validation. The first byte picks a message (Score, Append, a
// Stream frame, CreateSession), the rest is its protobuf encoding; it is parsed, converted as the
// server converts it (server/aaren_v1) and run on an in-process Engine with the demo models.
// Properties checked, besides ASan/UBSan finding nothing:
//   * a call that fails changes nothing: the sessions it could touch are byte-identical after,
//     and no session is left behind;
//   * a call that succeeds returns finite outputs of the shape its output mode promises.
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "aaren/v1/aaren.pb.h"
#include "server/aaren_v1/aaren_service.h"
#include "server/aaren_v1/proto_convert.h"
#include "tests/fuzz/fuzz_support.h"

namespace aaren::fuzz {
namespace {

const char* const kSessions[] = {"fuzz-lm", "fuzz-ts"};

void EnsureSessions(FuzzEngine& f) {
  static bool made = false;
  if (made) return;
  for (int i = 0; i < 2; ++i) {
    Engine::CreateParams p;
    p.model = i == 0 ? "demo-lm" : "demo-ts";
    p.session_id = kSessions[i];
    if (!CreateSync(*f.engine, std::move(p)).ok()) Fail("cannot create the fuzz sessions");
  }
  made = true;
}

int64_t LiveSessions(Engine& engine) {
  const StoreCounts c = engine.stats().store;
  return c.pool + c.host;
}

void CheckOutputs(const std::vector<float>& outputs, size_t want, const char* what) {
  if (outputs.size() != want) Fail(std::string(what) + ": wrong number of outputs");
  for (float v : outputs) {
    if (!std::isfinite(v)) Fail(std::string(what) + ": a non-finite output");
  }
}

size_t OutputCount(OutputMode mode, int64_t tokens, int64_t od) {
  if (mode == OutputMode::kAll) return static_cast<size_t>(tokens * od);
  if (mode == OutputMode::kLast) return static_cast<size_t>(od);
  return 0;
}

void RunAppend(FuzzEngine& f, const v1::AppendRequest& request, const char* prefix, uint8_t which) {
  auto params = AppendParamsFromProto(request, prefix, McaOptions{});
  if (!params.ok()) return;  // refused before the engine: nothing to compare
  const std::string id = kSessions[which & 1];
  const ServedModel& m = (which & 1) == 0 ? *f.lm : *f.ts;
  params->session_id = id;
  const int64_t tokens = params->input.length(m.config().n_features);
  const OutputMode mode = params->mode;
  const SessionImage before = Capture(*f.engine, id);
  absl::StatusOr<AppendResult> r = AppendSync(*f.engine, *std::move(params));
  const SessionImage after = Capture(*f.engine, id);
  if (!r.ok()) {
    if (!(before == after)) Fail("a failed append changed its session: " + r.status().ToString());
    return;
  }
  if (r->replayed) return;
  if (after.position != before.position + tokens) Fail("append: position moved wrongly");
  CheckOutputs(r->outputs, OutputCount(mode, tokens, m.output_dim), "append");
}

void RunScore(FuzzEngine& f, const v1::ScoreRequest& request) {
  auto mode = FromProto(request.output_mode(), "output_mode");
  if (!mode.ok()) return;
  auto mca = FromProto(request.mca(), "mca", McaOptions{});
  if (!mca.ok()) return;
  Engine::ScoreParams params;
  params.model = request.model().empty() ? "demo-lm" : request.model();
  params.mode = *mode;
  params.mca = *mca;
  params.prefill = request.prefill();
  for (const v1::Sequence& s : request.sequences()) params.sequences.push_back(FromProto(s));
  const int64_t live = LiveSessions(*f.engine);
  const SessionImage before = Capture(*f.engine, kSessions[0]);
  absl::StatusOr<std::vector<SequenceOutput>> r = ScoreSync(*f.engine, std::move(params));
  if (!r.ok()) {
    if (LiveSessions(*f.engine) != live) Fail("a failed Score left sessions behind");
    if (!(Capture(*f.engine, kSessions[0]) == before)) Fail("a failed Score changed a session");
    return;
  }
  const ServedModel* m = f.registry->Find(request.model().empty() ? "demo-lm" : request.model());
  for (int i = 0; i < static_cast<int>(r->size()); ++i) {
    const SequenceInput in = FromProto(request.sequences(i));
    CheckOutputs((*r)[i].outputs,
                 OutputCount(*mode, in.length(m->config().n_features), m->output_dim), "score");
    if (request.prefill() && !DeleteSync(*f.engine, (*r)[i].session_id).ok()) {
      Fail("a prefilled session cannot be deleted");
    }
  }
}

void RunCreate(FuzzEngine& f, const v1::CreateSessionRequest& request) {
  auto mca = FromProto(request.mca(), "mca", McaOptions{});
  if (!mca.ok()) return;
  Engine::CreateParams params;
  params.model = request.model();
  params.session_id = request.session_id();
  params.prefix = FromProto(request.prefix());
  params.mca = *mca;
  const int64_t live = LiveSessions(*f.engine);
  absl::StatusOr<SessionInfo> r = CreateSync(*f.engine, std::move(params));
  if (!r.ok()) {
    if (LiveSessions(*f.engine) != live) Fail("a failed CreateSession left a session behind");
    return;
  }
  if (!DeleteSync(*f.engine, r->session_id).ok()) Fail("a created session cannot be deleted");
}

}  // namespace
}  // namespace aaren::fuzz

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aaren;        // NOLINT: a harness entry point
  using namespace aaren::fuzz;  // NOLINT
  if (size < 2) return 0;
  FuzzEngine& f = SharedEngine();
  EnsureSessions(f);
  const uint8_t kind = data[0];
  const uint8_t which = data[1];
  const void* body = data + 2;
  const int n = static_cast<int>(size - 2);
  switch (kind % 4) {
    case 0: {
      v1::ScoreRequest r;
      if (r.ParseFromArray(body, n)) RunScore(f, r);
      break;
    }
    case 1: {
      v1::AppendRequest r;
      if (r.ParseFromArray(body, n)) RunAppend(f, r, "", which);
      break;
    }
    case 2: {
      v1::StreamRequest r;
      if (r.ParseFromArray(body, n) && r.has_append()) RunAppend(f, r.append(), "append.", which);
      break;
    }
    default: {
      v1::CreateSessionRequest r;
      if (r.ParseFromArray(body, n)) RunCreate(f, r);
      break;
    }
  }
  return 0;
}

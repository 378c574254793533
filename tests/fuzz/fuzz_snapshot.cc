// SPDX-License-Identifier: Apache-2.0
// libFuzzer harness: ImportSession. The input is a SessionSnapshot's protobuf encoding (first byte:
// which demo model it is for); its model and config_hash are set to that model's, so that the
// fuzzer spends its time on the position, sizes and state values. Properties, besides ASan/UBSan:
//   * a refused snapshot leaves no session;
//   * an accepted one can always be appended to: the next token runs and its outputs are finite
//     (ImportSession accepts only states some sequence produces, core/state_bounds.h).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "aaren/v1/aaren.pb.h"
#include "server/aaren_v1/proto_convert.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace aaren;        // NOLINT: a harness entry point
  using namespace aaren::fuzz;  // NOLINT
  if (size < 1) return 0;
  FuzzEngine& f = SharedEngine();
  const ServedModel& m = (data[0] & 1) == 0 ? *f.lm : *f.ts;
  v1::SessionSnapshot proto;
  if (!proto.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  proto.set_model(m.name);
  proto.set_config_hash(m.config_hash);
  absl::StatusOr<SessionSnapshot> snap = FromProto(proto);
  if (!snap.ok()) return 0;
  absl::StatusOr<SessionInfo> info = f.engine->ImportSession(*snap, "imported", 0);
  if (!info.ok()) {
    if (f.engine->GetSession("imported").ok()) Fail("a refused import left a session");
    return 0;
  }
  Engine::AppendParams append;
  append.session_id = "imported";
  append.mode = OutputMode::kLast;
  if (m.config().input_kind == InputKind::kTokens) {
    append.input.tokens = {1};
  } else {
    append.input.features.assign(static_cast<size_t>(m.config().n_features), 0.5f);
  }
  absl::StatusOr<AppendResult> r = AppendSync(*f.engine, std::move(append));
  if (!r.ok()) Fail("an imported session could not be appended to: " + r.status().ToString());
  for (float v : r->outputs) {
    if (!std::isfinite(v)) Fail("an imported session gave a non-finite output");
  }
  if (!DeleteSync(*f.engine, "imported").ok()) Fail("the imported session cannot be deleted");
  return 0;
}

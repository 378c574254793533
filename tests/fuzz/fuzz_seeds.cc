// SPDX-License-Identifier: Apache-2.0
// Writes the seed corpora of the harnesses (tests/fuzz/corpus/<harness>/seed-*): valid inputs the
// fuzzers start from and mutate. Run by `scripts/fuzz.sh --seeds`; the output is committed.
//   fuzz_seeds OUT_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
#include <string>
#include <utility>
#include <vector>

#include "aaren/v1/aaren.pb.h"
#include "core/model.h"
#include "core/model_config.h"
#include "core/safetensors.h"
#include "server/aaren_v1/proto_convert.h"
#include "tests/fuzz/fuzz_support.h"

namespace aaren::fuzz {
namespace {

void Write(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

std::string Tagged(uint8_t kind, uint8_t which, const google::protobuf::Message& m) {
  return std::string{static_cast<char>(kind), static_cast<char>(which)} + m.SerializeAsString();
}

void RequestSeeds(const std::filesystem::path& dir) {
  v1::ScoreRequest score;
  score.set_model("demo-lm");
  for (int i = 0; i < 2; ++i) {
    v1::Sequence* s = score.add_sequences();
    for (int t = 0; t < 5 + i; ++t) s->add_tokens((t * 7 + i) % 43);
  }
  Write(dir / "seed-score", Tagged(0, 0, score));
  score.set_output_mode(v1::OUTPUT_MODE_LAST);
  score.set_prefill(true);
  score.mutable_mca()->set_enabled(true);
  score.mutable_mca()->set_alpha(0.5f);
  Write(dir / "seed-score-prefill-mca", Tagged(0, 0, score));

  v1::AppendRequest lm;
  for (int t = 0; t < 4; ++t) lm.mutable_input()->add_tokens(t + 3);
  lm.set_expected_position(0);
  Write(dir / "seed-append-lm", Tagged(1, 0, lm));
  v1::AppendRequest ts;
  for (int i = 0; i < 16; ++i) ts.mutable_input()->add_features(0.1f * static_cast<float>(i));
  ts.set_output_mode(v1::OUTPUT_MODE_NONE);
  Write(dir / "seed-append-ts", Tagged(1, 1, ts));
  v1::StreamRequest stream;
  *stream.mutable_append() = lm;
  Write(dir / "seed-stream-append", Tagged(2, 0, stream));

  v1::CreateSessionRequest create;
  create.set_model("demo-ts");
  create.set_session_id("seed.session-1");
  for (int i = 0; i < 8; ++i) create.mutable_prefix()->add_features(-0.2f * static_cast<float>(i));
  Write(dir / "seed-create", Tagged(3, 0, create));
}

void SnapshotSeeds(const std::filesystem::path& dir) {
  FuzzEngine& f = SharedEngine();
  int n = 0;
  for (const ServedModel* m : {f.lm, f.ts}) {
    const std::string id = "seed-" + m->name;
    Engine::CreateParams create;
    create.model = m->name;
    create.session_id = id;
    if (!CreateSync(*f.engine, std::move(create)).ok()) Fail("seed session");
    for (int step = 0; step < 2; ++step) {
      std::promise<absl::StatusOr<SessionSnapshot>> promise;
      auto future = promise.get_future();
      f.engine->ExportSession(
          id, [&](absl::StatusOr<SessionSnapshot> s) { promise.set_value(std::move(s)); });
      absl::StatusOr<SessionSnapshot> snap = future.get();
      if (!snap.ok()) Fail("seed export");
      v1::SessionSnapshot proto;
      ToProto(*snap, &proto);
      const char which = m == f.lm ? 0 : 1;
      Write(dir / ("seed-" + std::to_string(n++)),
            std::string(1, which) + proto.SerializeAsString());
      Engine::AppendParams append;
      append.session_id = id;
      if (m->config().input_kind == InputKind::kTokens) {
        append.input.tokens = {1, 2, 3, 4, 5};
      } else {
        append.input.features.assign(static_cast<size_t>(5 * m->config().n_features), 0.25f);
      }
      if (!AppendSync(*f.engine, std::move(append)).ok()) Fail("seed append");
    }
  }
}

void ModelSeeds(const std::filesystem::path& dir) {
  ModelConfig c;
  c.d_model = 8;
  c.n_heads = 2;
  c.n_layers = 1;
  c.d_ff = 16;
  c.input_kind = InputKind::kTokens;
  c.vocab_size = 5;
  c.output_dim = 5;
  std::vector<std::pair<std::string, Tensor>> owned;
  uint32_t x = 12345;
  for (auto& [name, shape] : ExpectedTensors(c)) {
    Tensor t;
    t.shape = shape;
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    for (int64_t i = 0; i < n; ++i) {
      x = x * 1664525u + 1013904223u;
      t.data.push_back(static_cast<float>(x >> 8) / static_cast<float>(1 << 24) - 0.5f);
    }
    owned.emplace_back(name, std::move(t));
  }
  std::vector<NamedTensor> named;
  for (auto& [name, t] : owned) named.push_back({name, &t});
  const std::string config = ModelConfigToJson(c);
  const std::string weights = SerializeSafetensors(named);
  std::string input{static_cast<char>(config.size() & 0xff), static_cast<char>(config.size() >> 8)};
  Write(dir / "seed-tiny", input + config + weights);
  // A config alone (length 0xffff: the rest is the config), nested deeper than any config.
  const std::string nest = "{\"model_type\":\"aaren\",\"d_model\":" + std::string(20000, '[') +
                           std::string(20000, ']') + "}";
  Write(dir / "seed-deep-config", std::string("\xff\xff", 2) + nest);
}

}  // namespace
}  // namespace aaren::fuzz

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: fuzz_seeds OUT_DIR\n");
    return 2;
  }
  const std::filesystem::path out = argv[1];
  aaren::fuzz::RequestSeeds(out / "fuzz_requests");
  aaren::fuzz::SnapshotSeeds(out / "fuzz_snapshot");
  aaren::fuzz::ModelSeeds(out / "fuzz_model_loader");
  return 0;
}

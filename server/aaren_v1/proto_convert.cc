// SPDX-License-Identifier: Apache-2.0
#include "server/aaren_v1/proto_convert.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace aaren {
namespace {

void BytesFromFloats(const std::vector<float>& values, std::string* out) {
  out->assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
}

absl::StatusOr<std::vector<float>> FloatsFromBytes(const std::string& bytes,
                                                   absl::string_view field) {
  if (bytes.size() % sizeof(float) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": ", bytes.size(), " bytes is not a whole number of float32"));
  }
  std::vector<float> values(bytes.size() / sizeof(float));
  if (!values.empty()) std::memcpy(values.data(), bytes.data(), bytes.size());
  return values;
}

}  // namespace

SequenceInput FromProto(const v1::Sequence& sequence) {
  SequenceInput in;
  in.tokens.assign(sequence.tokens().begin(), sequence.tokens().end());
  in.features.assign(sequence.features().begin(), sequence.features().end());
  return in;
}

absl::StatusOr<OutputMode> FromProto(v1::OutputMode mode, absl::string_view field) {
  switch (mode) {
    case v1::OUTPUT_MODE_ALL:
      return OutputMode::kAll;
    case v1::OUTPUT_MODE_LAST:
      return OutputMode::kLast;
    case v1::OUTPUT_MODE_NONE:
      return OutputMode::kNone;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat(field, ": unknown value ", static_cast<int>(mode),
                       " (OUTPUT_MODE_ALL = 0, OUTPUT_MODE_LAST = 1, OUTPUT_MODE_NONE = 2)"));
  }
}

absl::StatusOr<McaOptions> FromProto(const v1::McaOptions& mca, absl::string_view field,
                                     const McaOptions& server_default) {
  if (!mca.enabled()) return server_default;
  McaOptions out{true, mca.alpha(), mca.seed()};
  if (absl::Status st = ValidateMca(out, field); !st.ok()) return st;
  return out;
}

void ToProto(const McaCounts& counts, v1::McaStats* out) {
  out->set_value_flops(static_cast<uint64_t>(counts.value_flops));
  out->set_value_flops_exact(static_cast<uint64_t>(counts.value_flops_exact));
}

void ToProto(const SessionInfo& info, v1::Session* out) {
  out->set_session_id(info.session_id);
  out->set_model(info.model);
  out->set_position(info.position);
  out->set_state_bytes(info.state_bytes);
  out->set_idle_ttl_seconds(info.idle_ttl_s);
  out->set_tier(info.tier == Tier::kPool ? v1::SESSION_TIER_POOL : v1::SESSION_TIER_HOST);
  out->set_created_unix_ms(info.created_ms);
  out->set_last_used_unix_ms(info.last_used_ms);
}

void ToProto(const ServedModel& model, v1::ModelInfo* out) {
  const ModelConfig& c = model.config();
  out->set_name(model.name);
  out->set_model_type(c.model_type);
  out->set_d_model(static_cast<uint32_t>(c.d_model));
  out->set_n_heads(static_cast<uint32_t>(c.n_heads));
  out->set_n_layers(static_cast<uint32_t>(c.n_layers));
  out->set_d_ff(static_cast<uint32_t>(c.d_ff));
  out->set_input_kind(std::string(InputKindName(c.input_kind)));
  out->set_vocab_size(static_cast<uint32_t>(c.vocab_size));
  out->set_n_features(static_cast<uint32_t>(c.n_features));
  out->set_output_dim(static_cast<uint32_t>(c.output_dim));
  out->set_position(std::string(PositionKindName(c.position)));
  out->set_state_bytes(static_cast<uint64_t>(c.state_bytes()));
  out->set_config_hash(model.config_hash);
  out->set_num_parameters(static_cast<uint64_t>(model.model->num_parameters()));
  out->set_backend(std::string(model.backend->name()));
}

void ToProto(const SessionSnapshot& s, v1::SessionSnapshot* out) {
  out->set_format_version(s.format_version);
  out->set_model(s.model);
  out->set_config_hash(s.config_hash);
  out->set_position(s.position);
  out->set_n_layers(static_cast<uint32_t>(s.layout.n_layers));
  out->set_n_heads(static_cast<uint32_t>(s.layout.n_heads));
  out->set_d_head(static_cast<uint32_t>(s.layout.d_head));
  BytesFromFloats(s.state, out->mutable_state());
  out->set_output_dim(static_cast<uint32_t>(s.output_dim));
  BytesFromFloats(s.last_output, out->mutable_last_output());
  out->set_exported_unix_ms(NowUnixMs());
}

absl::StatusOr<SessionSnapshot> FromProto(const v1::SessionSnapshot& p) {
  SessionSnapshot s;
  s.format_version = p.format_version();
  s.model = p.model();
  s.config_hash = p.config_hash();
  s.position = p.position();
  s.layout = StateLayout{p.n_layers(), p.n_heads(), p.d_head()};
  auto state = FloatsFromBytes(p.state(), "snapshot.state");
  if (!state.ok()) return state.status();
  s.state = std::move(*state);
  s.output_dim = p.output_dim();
  auto last = FloatsFromBytes(p.last_output(), "snapshot.last_output");
  if (!last.ok()) return last.status();
  s.last_output = std::move(*last);
  return s;
}

void SetFloats(const std::vector<float>& values, google::protobuf::RepeatedField<float>* out) {
  out->Resize(static_cast<int>(values.size()), 0.0f);
  if (!values.empty()) std::memcpy(out->mutable_data(), values.data(), values.size() * 4);
}

}  // namespace aaren

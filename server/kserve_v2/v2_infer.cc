// SPDX-License-Identifier: Apache-2.0
#include "server/kserve_v2/v2_infer.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "engine/input_validation.h"
#include "engine/session_id.h"

namespace aaren::v2 {
namespace {

using inference::InferParameter;
using inference::ModelInferRequest;
using ParamMap = google::protobuf::Map<std::string, InferParameter>;

std::string ShapeText(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ","), "]");
}

const InferParameter* FindParam(const ParamMap& params, const char* name) {
  auto it = params.find(name);
  return it == params.end() ? nullptr : &it->second;
}

absl::Status BadParam(const char* name, absl::string_view want) {
  return absl::InvalidArgumentError(absl::StrCat("parameters.", name, ": must be ", want));
}

// sequence_id: int64 / uint64 (decimal; 0 = none) or string ("" = none).
absl::StatusOr<std::string> SequenceId(const ParamMap& params) {
  const InferParameter* p = FindParam(params, "sequence_id");
  if (p == nullptr) return std::string();
  switch (p->parameter_choice_case()) {
    case InferParameter::kInt64Param:
      if (p->int64_param() < 0) return BadParam("sequence_id", "an unsigned integer or a string");
      return p->int64_param() == 0 ? std::string() : absl::StrCat(p->int64_param());
    case InferParameter::kUint64Param:
      return p->uint64_param() == 0 ? std::string() : absl::StrCat(p->uint64_param());
    case InferParameter::kStringParam:
      return p->string_param();
    default:
      return BadParam("sequence_id", "an unsigned integer or a string");
  }
}

absl::StatusOr<bool> BoolParam(const ParamMap& params, const char* name) {
  const InferParameter* p = FindParam(params, name);
  if (p == nullptr) return false;
  if (p->parameter_choice_case() != InferParameter::kBoolParam) return BadParam(name, "a bool");
  return p->bool_param();
}

absl::Status ParseOptions(const ParamMap& params, const ParseLimits& limits, InferCall* call) {
  if (const InferParameter* p = FindParam(params, "output_mode"); p != nullptr) {
    const std::string& mode = p->string_param();
    if (p->parameter_choice_case() != InferParameter::kStringParam ||
        (mode != "all" && mode != "last")) {
      return BadParam("output_mode", "\"all\" or \"last\"");
    }
    call->mode = mode == "last" ? OutputMode::kLast : OutputMode::kAll;
  }
  call->mca = limits.default_mca;
  if (const InferParameter* p = FindParam(params, "mca_alpha"); p != nullptr) {
    double alpha = 0;
    if (p->parameter_choice_case() == InferParameter::kDoubleParam) {
      alpha = p->double_param();
    } else if (p->parameter_choice_case() == InferParameter::kInt64Param) {
      alpha = static_cast<double>(p->int64_param());
    } else {
      return BadParam("mca_alpha", "a number");
    }
    if (!std::isfinite(alpha) || alpha < 0 || alpha > 1e30) {
      return BadParam("mca_alpha", "a finite number >= 0");
    }
    call->mca.enabled = true;
    call->mca.alpha = static_cast<float>(alpha);
    call->mca.seed = 0;
  }
  if (const InferParameter* p = FindParam(params, "timeout"); p != nullptr) {
    // Triton's request timeout, in microseconds (tritonclient's infer(timeout=...)).
    // (At most kMaxTimeoutUs, a year: a wait in nanoseconds must not overflow.)
    constexpr uint64_t kMaxTimeoutUs = uint64_t{1'000'000} * 86400 * 365;
    if (p->parameter_choice_case() == InferParameter::kInt64Param && p->int64_param() >= 0) {
      call->timeout_us = static_cast<int64_t>(
          std::min<uint64_t>(static_cast<uint64_t>(p->int64_param()), kMaxTimeoutUs));
    } else if (p->parameter_choice_case() == InferParameter::kUint64Param) {
      call->timeout_us = static_cast<int64_t>(std::min<uint64_t>(p->uint64_param(), kMaxTimeoutUs));
    } else {
      return BadParam("timeout", "microseconds, an unsigned integer");
    }
  }
  if (const InferParameter* p = FindParam(params, "mca_seed"); p != nullptr) {
    if (p->parameter_choice_case() == InferParameter::kInt64Param && p->int64_param() >= 0) {
      call->mca.seed = static_cast<uint64_t>(p->int64_param());
    } else if (p->parameter_choice_case() == InferParameter::kUint64Param) {
      call->mca.seed = p->uint64_param();
    } else {
      return BadParam("mca_seed", "an unsigned integer");
    }
  }
  return absl::OkStatus();
}

// Fills call->input from the request's one input tensor, checking name, datatype, shape, size
// and values against the model.
absl::Status ParseInput(ModelInferRequest& request, const ParseLimits& limits, InferCall* call) {
  const ServedModel& m = *call->model;
  const ModelConfig& config = m.config();
  const bool tokens = config.input_kind == InputKind::kTokens;
  const char* name = InputName(m);
  const char* datatype = tokens ? "INT32" : "FP32";
  const std::string dims = tokens ? "[-1]" : absl::StrCat("[-1,", config.n_features, "]");
  if (request.inputs_size() != 1) {
    return absl::InvalidArgumentError(absl::StrCat("inputs: ", request.inputs_size(),
                                                   " tensors; the model '", m.name, "' takes one, ",
                                                   name, " ", datatype, " ", dims));
  }
  ModelInferRequest::InferInputTensor& in = *request.mutable_inputs(0);
  if (in.name() != name) {
    return absl::InvalidArgumentError(absl::StrCat("inputs[0].name: unexpected input '",
                                                   Quoted(in.name()), "'; the model '", m.name,
                                                   "' takes ", name));
  }
  if (in.datatype() != datatype) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": datatype ", Quoted(in.datatype()),
                                                   " does not match the model's ", datatype));
  }
  const auto& shape = in.shape();
  const bool shape_ok =
      tokens ? shape.size() == 1 : shape.size() == 2 && shape[1] == config.n_features;
  if (!shape_ok || shape[0] < 0) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": shape ", ShapeText(shape),
                                                   " does not match the model's dims ", dims));
  }
  const int64_t n = shape[0];
  if (n == 0) return absl::InvalidArgumentError(absl::StrCat(name, ": empty (shape [0,...])"));
  if (n > limits.max_sequence_tokens) {
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", n, " tokens exceed the limit of ",
                                                   limits.max_sequence_tokens,
                                                   " per sequence (--max_sequence_tokens)"));
  }
  const int64_t elements = tokens ? n : n * config.n_features;
  const bool raw = request.raw_input_contents_size() > 0;
  if (raw) {
    if (request.raw_input_contents_size() != 1) {
      return absl::InvalidArgumentError(absl::StrCat(
          "raw_input_contents: ", request.raw_input_contents_size(), " entries for 1 input"));
    }
    if (in.has_contents()) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, ": both contents and raw_input_contents are set; use one"));
    }
    const std::string& bytes = request.raw_input_contents(0);
    if (static_cast<int64_t>(bytes.size()) != elements * 4) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", bytes.size(),
                                                     " bytes of raw contents; shape ",
                                                     ShapeText(shape), " needs ", elements * 4));
    }
    // The wire is little-endian, as is every platform this server builds for.
    if (tokens) {
      call->input.tokens.resize(static_cast<size_t>(elements));
      std::memcpy(call->input.tokens.data(), bytes.data(), bytes.size());
    } else {
      call->input.features.resize(static_cast<size_t>(elements));
      std::memcpy(call->input.features.data(), bytes.data(), bytes.size());
    }
  } else {
    const inference::InferTensorContents& c = in.contents();
    const int64_t got = tokens ? c.int_contents_size() : c.fp32_contents_size();
    const char* field = tokens ? "int_contents" : "fp32_contents";
    if (got != elements) {
      return absl::InvalidArgumentError(absl::StrCat(name, ": ", got, " values (contents.", field,
                                                     " on gRPC, data on REST); shape ",
                                                     ShapeText(shape), " needs ", elements));
    }
    if (tokens) {
      call->input.tokens.assign(c.int_contents().begin(), c.int_contents().end());
    } else {
      call->input.features.assign(c.fp32_contents().begin(), c.fp32_contents().end());
    }
  }
  for (size_t i = 0; i < call->input.tokens.size(); ++i) {
    const int32_t t = call->input.tokens[i];
    if (t < 0 || t >= config.vocab_size) {
      return absl::InvalidArgumentError(absl::StrCat(name, "[", i, "]: token id ", t,
                                                     " out of range [0, ", config.vocab_size, ")"));
    }
  }
  for (size_t i = 0; i < call->input.features.size(); ++i) {
    if (!std::isfinite(call->input.features[i])) {
      return absl::InvalidArgumentError(
          absl::StrCat(name, "[", i, "]: ", call->input.features[i], " is not a finite value"));
    }
  }
  for (int i = 0; i < request.outputs_size(); ++i) {
    if (request.outputs(i).name() != kOutputsTensor) {
      return absl::InvalidArgumentError(
          absl::StrCat("outputs[", i, "].name: unknown output '", Quoted(request.outputs(i).name()),
                       "'; the model '", m.name, "' has ", kOutputsTensor));
    }
    if (request.outputs(i).parameters().contains("classification")) {
      return absl::InvalidArgumentError(
          absl::StrCat("outputs[", i,
                       "].parameters.classification: not offered (the server does not have the "
                       "classification extension); OUTPUTS is the FP32 tensor"));
    }
  }
  return absl::OkStatus();
}

// The protocol's answer to an append on a sequence this tenant does not have.
absl::Status NeedsStart(const InferCall& call, const absl::Status& engine_status) {
  const bool expired = absl::StrContains(engine_status.message(), "expired");
  const bool other_model = absl::StrContains(engine_status.message(), "serves model");
  return absl::InvalidArgumentError(absl::StrCat(
      "inference request for sequence ", call.sequence_id, " to model '", call.model->name,
      "' must specify the START flag on the first request of the sequence",
      expired ? " (the sequence expired: it was idle longer than max_sequence_idle_microseconds)"
      : other_model ? " (the id names a sequence of another model)"
                    : ""));
}

// The stages of a sequence request. Owned by the chain of engine callbacks.
struct SequenceRun {
  Engine* engine;
  std::string tenant;
  InferCall call;
  std::shared_ptr<CancelFlag> cancel;
  InferDone done;
  // The incarnation this request works on: the session START made, or (END) the one the
  // append was applied to. 0: not known yet.
  uint64_t uid = 0;
  bool retried_end = false;  // END's delete lost a compare-and-set once and was tried again

  SessionRef ref() const { return SessionRef(tenant, call.sequence_id); }

  static void Start(std::unique_ptr<SequenceRun> run) {
    if (!run->call.start) return Append(std::move(run));
    if (!run->engine->GetSession(run->ref()).ok()) return Create(std::move(run));
    // START on an existing sequence: it begins again from the empty state. What would refuse
    // the new session's append is checked before the old session is deleted.
    Engine* engine = run->engine;
    if (absl::Status st =
            engine->CheckNewSessionCosts(*run->call.model, run->call.input, run->call.mode,
                                         InputName(*run->call.model), run->ref());
        !st.ok()) {
      return run->done(st);
    }
    const SessionRef ref = run->ref();
    std::shared_ptr<CancelFlag> cancel = run->cancel;
    engine->DeleteSession(
        ref,
        [engine, run = std::move(run)](absl::Status st) mutable {
          if (!st.ok() && !absl::IsNotFound(st)) return run->done(st);
          // (On the scheduler thread: CreateSession reads a shared store.)
          engine->RunOffScheduler([run = std::move(run)]() mutable { Create(std::move(run)); });
        },
        cancel);
  }

  static void Create(std::unique_ptr<SequenceRun> run) {
    Engine::CreateParams params;
    params.tenant = run->tenant;
    params.model = run->call.model->name;
    params.session_id = run->call.sequence_id;
    params.cancel = run->cancel;
    Engine* engine = run->engine;
    engine->CreateSession(std::move(params),
                          [run = std::move(run)](absl::StatusOr<SessionInfo> info) mutable {
                            if (!info.ok()) return run->done(info.status());
                            run->uid = info->uid;
                            Append(std::move(run));
                          });
  }

  static void Append(std::unique_ptr<SequenceRun> run) {
    Engine::AppendParams params;
    params.tenant = run->tenant;
    params.session_id = run->call.sequence_id;
    params.expected_uid = run->uid;
    params.model = run->call.model->name;  // a sequence belongs to the model that started it
    params.input = std::move(run->call.input);
    params.mode = run->call.mode;
    params.mca = run->call.mca;
    params.cancel = run->cancel;
    Engine* engine = run->engine;
    engine->Append(std::move(params), [run =
                                           std::move(run)](absl::StatusOr<AppendResult> r) mutable {
      if (!r.ok()) {
        absl::Status st = absl::IsNotFound(r.status()) && run->uid == 0
                              ? NeedsStart(run->call, r.status())
                              : r.status();
        // A START whose append failed leaves no session behind (the call changes nothing).
        if (run->uid != 0) return Finish(std::move(run), std::move(st));
        return run->done(std::move(st));
      }
      InferResult result;
      result.output_dim = r->output_dim;
      result.rows = r->output_dim > 0 ? static_cast<int64_t>(r->outputs.size()) / r->output_dim : 0;
      result.outputs = std::move(r->outputs);
      if (!run->call.end) return run->done(std::move(result));
      // END deletes the incarnation this append was applied to (held here: no store read on
      // the scheduler thread, where this runs).
      run->uid = r->uid;
      Finish(std::move(run), std::move(result));
    });
  }

  // END (or a failed START): delete the session, then answer with `reply`. Only the
  // incarnation the request used is deleted, not one made again under the id meanwhile. A
  // delete that lost a compare-and-set (another replica wrote the session after this one's
  // append: this copy was replaced by its record) is tried once more, on the fresh copy.
  static void Finish(std::unique_ptr<SequenceRun> run, absl::StatusOr<InferResult> reply) {
    Engine* engine = run->engine;
    const SessionRef ref = run->ref();
    const uint64_t uid = run->uid;
    engine->DeleteSession(
        ref,
        [engine, run = std::move(run), reply = std::move(reply)](absl::Status st) mutable {
          if (absl::IsAborted(st) && !run->retried_end) {
            run->retried_end = true;
            // (The fresh copy is loaded from a shared store: not on the scheduler thread.)
            return engine->RunOffScheduler(
                [run = std::move(run), reply = std::move(reply)]() mutable {
                  Finish(std::move(run), std::move(reply));
                });
          }
          run->done(std::move(reply));
        },
        /*cancel=*/nullptr, uid);
  }
};

}  // namespace

absl::StatusOr<const ServedModel*> FindModel(const ModelRegistry& models, absl::string_view name,
                                             absl::string_view version) {
  const ServedModel* m = models.Find(name);
  if (m == nullptr) {
    std::vector<std::string> names;
    for (const ServedModel* s : models.models()) names.push_back(s->name);
    return absl::NotFoundError(absl::StrCat("model: unknown model '", Quoted(name),
                                            "' (served: ", absl::StrJoin(names, ", "), ")"));
  }
  if (!version.empty() && version != kModelVersion) {
    return absl::NotFoundError(absl::StrCat("model_version: model '", name, "' has no version '",
                                            Quoted(version), "' (served: ", kModelVersion, ")"));
  }
  return m;
}

const char* InputName(const ServedModel& model) {
  return model.config().input_kind == InputKind::kTokens ? kTokensInput : kFeaturesInput;
}

absl::StatusOr<InferCall> ParseInfer(ModelInferRequest& request, const ModelRegistry& models,
                                     const ParseLimits& limits) {
  InferCall call;
  auto model = FindModel(models, request.model_name(), request.model_version());
  if (!model.ok()) return model.status();
  call.model = *model;
  call.request_id = request.id();
  auto id = SequenceId(request.parameters());
  if (!id.ok()) return id.status();
  call.sequence_id = *std::move(id);
  auto start = BoolParam(request.parameters(), "sequence_start");
  if (!start.ok()) return start.status();
  auto end = BoolParam(request.parameters(), "sequence_end");
  if (!end.ok()) return end.status();
  call.start = *start;
  call.end = *end;
  if (call.sequence_id.empty() && (call.start || call.end)) {
    return absl::InvalidArgumentError(
        "parameters.sequence_start/sequence_end: need a non-zero sequence_id");
  }
  if (!call.sequence_id.empty()) {
    if (absl::Status st = ValidateSessionId(call.sequence_id, "parameters.sequence_id"); !st.ok()) {
      return st;
    }
  }
  if (absl::Status st = ParseOptions(request.parameters(), limits, &call); !st.ok()) return st;
  if (absl::Status st = ParseInput(request, limits, &call); !st.ok()) return st;
  // The reply (outputs, the echoed id, the model name) must fit one message: refused here,
  // before any work, rather than computed and then not sendable.
  if (const int64_t bytes = ExpectedReplyBytes(call);
      limits.max_reply_bytes > 0 && bytes > limits.max_reply_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(
        InputName(*call.model), ": the reply would be about ", bytes, " bytes (",
        call.mode == OutputMode::kLast ? 1 : call.input.length(call.model->config().n_features),
        " rows x ", call.model->output_dim, " outputs x 4, with the id and model name), more than ",
        "--max_message_bytes (", limits.max_reply_bytes,
        "); send fewer tokens per request or use output_mode \"last\""));
  }
  return call;
}

void RunInfer(Engine* engine, const std::string& tenant, InferCall call,
              std::shared_ptr<CancelFlag> cancel, InferDone done) {
  if (call.sequence_id.empty()) {
    Engine::ScoreParams params;
    params.tenant = tenant;
    params.model = call.model->name;
    params.mode = call.mode;
    params.mca = call.mca;
    params.cancel = std::move(cancel);
    params.sequences.push_back(std::move(call.input));
    engine->Score(
        std::move(params),
        [done = std::move(done)](absl::StatusOr<std::vector<SequenceOutput>> results) mutable {
          if (!results.ok()) return done(results.status());
          SequenceOutput& r = results->front();
          InferResult result;
          result.output_dim = r.output_dim;
          result.rows =
              r.output_dim > 0 ? static_cast<int64_t>(r.outputs.size()) / r.output_dim : 0;
          result.outputs = std::move(r.outputs);
          done(std::move(result));
        });
    return;
  }
  auto run = std::make_unique<SequenceRun>(
      SequenceRun{engine, tenant, std::move(call), std::move(cancel), std::move(done)});
  SequenceRun::Start(std::move(run));
}

int64_t ExpectedReplyBytes(const InferCall& call) {
  const int64_t rows =
      call.mode == OutputMode::kLast ? 1 : call.input.length(call.model->config().n_features);
  return rows * call.model->output_dim * 4 + 256 + static_cast<int64_t>(call.request_id.size()) +
         static_cast<int64_t>(call.model->name.size());
}

void ToInferResponse(const ServedModel& model, const std::string& request_id, InferResult result,
                     inference::ModelInferResponse* out) {
  out->set_model_name(model.name);
  out->set_model_version(kModelVersion);
  out->set_id(request_id);
  auto* tensor = out->add_outputs();
  tensor->set_name(kOutputsTensor);
  tensor->set_datatype("FP32");
  tensor->add_shape(result.rows);
  tensor->add_shape(result.output_dim);
  out->add_raw_output_contents()->assign(reinterpret_cast<const char*>(result.outputs.data()),
                                         result.outputs.size() * sizeof(float));
}

}  // namespace aaren::v2

// SPDX-License-Identifier: Apache-2.0
// aaren-client-example: a tour of the C++ client library against a running server, which doubles
// as an end-to-end check of it (exit 0 when every step behaves as the wire contract says).
//
//   aaren-client-example [HOST:PORT] [MODEL]        defaults: localhost:50051 demo-lm
//
// Steps: health and model list; a Stream session fed one append at a time and then pipelined;
// Score of the same tokens (its outputs must match the streamed ones to float rounding); fork,
// export and import (all three must generate the same greedy tokens); unary Append with
// expected_position (a stale position is ABORTED); Generate; cleanup.
#include <cmath>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "client/aaren_client.h"
#include "client/stream_session.h"
#include "core/status_macros.h"

namespace {

using aaren::client::AarenClient;
using aaren::client::StreamSession;
namespace v1 = aaren::v1;

absl::Status Check(bool condition, absl::string_view what) {
  if (condition) return absl::OkStatus();
  return absl::InternalError(absl::StrCat("check failed: ", what));
}

v1::AppendRequest TokenAppend(int32_t token) {
  v1::AppendRequest request;
  request.mutable_input()->add_tokens(token);
  request.set_output_mode(v1::OUTPUT_MODE_ALL);
  return request;
}

// Greedy tokens generated from `session_id`.
absl::StatusOr<std::vector<int32_t>> Greedy(AarenClient& client, const std::string& session_id) {
  v1::GenerateRequest request;
  request.set_session_id(session_id);
  request.set_max_tokens(8);
  request.set_temperature(0);
  ASSIGN_OR_RETURN(std::vector<v1::GenerateResponse> generated, client.Generate(request));
  std::vector<int32_t> tokens;
  for (const v1::GenerateResponse& g : generated) tokens.push_back(g.token());
  return tokens;
}

absl::Status Tour(AarenClient& client, const std::string& model_name) {
  ASSIGN_OR_RETURN(auto health, client.Health());
  std::cout << "health: "
            << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(health.status()) << "\n";
  ASSIGN_OR_RETURN(v1::ModelInfo model, client.GetModel(model_name));
  RETURN_IF_ERROR(Check(model.input_kind() == "tokens", "the example needs a token model"));
  std::cout << "model: " << model.name() << " (vocab " << model.vocab_size() << ", "
            << model.state_bytes() << " state bytes per session)\n";

  // A Stream session: one append with a round trip, then 63 pipelined.
  std::vector<int32_t> tokens;
  for (int i = 0; i < 64; ++i) tokens.push_back((i * 7 + 3) % static_cast<int>(model.vocab_size()));
  StreamSession stream(client);
  v1::OpenSession open;
  open.set_model(model.name());
  ASSIGN_OR_RETURN(v1::Session session, stream.Open(open));
  std::vector<float> streamed;
  ASSIGN_OR_RETURN(v1::AppendResponse first, stream.Append(TokenAppend(tokens[0])));
  streamed.assign(first.outputs().begin(), first.outputs().end());
  std::vector<v1::AppendRequest> rest;
  for (size_t i = 1; i < tokens.size(); ++i) rest.push_back(TokenAppend(tokens[i]));
  int64_t last_position = first.position();
  bool in_order = true;
  RETURN_IF_ERROR(stream.AppendPipelined(rest, [&](const v1::AppendResponse& reply) {
    in_order = in_order && reply.position() == last_position + 1;
    last_position = reply.position();
    streamed.insert(streamed.end(), reply.outputs().begin(), reply.outputs().end());
  }));
  RETURN_IF_ERROR(Check(in_order && last_position == 64, "pipelined replies in order"));
  RETURN_IF_ERROR(stream.Close());
  std::cout << "stream: session " << session.session_id() << ", 64 appends, position "
            << last_position << "\n";

  // Score of the same tokens: the scan and the recurrence agree to float rounding.
  v1::ScoreRequest score;
  score.set_model(model.name());
  score.add_sequences()->mutable_tokens()->Add(tokens.begin(), tokens.end());
  ASSIGN_OR_RETURN(v1::ScoreResponse scored, client.Score(score));
  const auto& outputs = scored.results(0).outputs();
  RETURN_IF_ERROR(Check(outputs.size() == static_cast<int>(streamed.size()), "Score size"));
  double max_diff = 0;
  for (int i = 0; i < outputs.size(); ++i) {
    max_diff = std::max(max_diff, static_cast<double>(std::abs(outputs[i] - streamed[i])));
  }
  RETURN_IF_ERROR(Check(max_diff < 1e-3, "Score matches the streamed outputs"));
  std::cout << "score: max |scan - stream| = " << max_diff << "\n";

  // Fork, export and import: three copies of one state generate the same greedy tokens.
  v1::ForkSessionRequest fork;
  fork.set_session_id(session.session_id());
  ASSIGN_OR_RETURN(v1::Session forked, client.ForkSession(fork));
  ASSIGN_OR_RETURN(v1::SessionSnapshot snapshot, client.ExportSession(session.session_id()));
  v1::ImportSessionRequest import;
  *import.mutable_snapshot() = snapshot;
  ASSIGN_OR_RETURN(v1::Session imported, client.ImportSession(import));
  ASSIGN_OR_RETURN(std::vector<int32_t> a, Greedy(client, session.session_id()));
  ASSIGN_OR_RETURN(std::vector<int32_t> b, Greedy(client, forked.session_id()));
  ASSIGN_OR_RETURN(std::vector<int32_t> c, Greedy(client, imported.session_id()));
  RETURN_IF_ERROR(Check(a == b && b == c, "fork/import generate like the original"));
  std::cout << "fork/export/import: " << snapshot.state().size()
            << " state bytes, same greedy continuation\n";

  // Unary Append with expected_position: a stale position is ABORTED.
  v1::AppendRequest append = TokenAppend(tokens[0]);
  append.set_session_id(forked.session_id());
  append.set_expected_position(0);
  absl::StatusOr<v1::AppendResponse> stale = client.Append(append);
  RETURN_IF_ERROR(Check(absl::IsAborted(stale.status()), "stale expected_position is ABORTED"));
  std::cout << "append: stale expected_position -> " << stale.status() << "\n";

  for (const std::string& id : {session.session_id(), forked.session_id(), imported.session_id()}) {
    RETURN_IF_ERROR(client.DeleteSession(id));
  }
  RETURN_IF_ERROR(Check(absl::IsNotFound(client.GetSession(session.session_id()).status()),
                        "a deleted session is NOT_FOUND"));
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string target = argc > 1 ? argv[1] : "localhost:50051";
  const std::string model = argc > 2 ? argv[2] : "demo-lm";
  aaren::client::ClientOptions options;
  options.timeout = absl::Seconds(30);
  AarenClient client(target, options);
  const absl::Status status = Tour(client, model);
  if (!status.ok()) {
    std::cerr << "aaren-client-example: " << status << "\n";
    return EXIT_FAILURE;
  }
  std::cout << "all checks passed\n";
  return EXIT_SUCCESS;
}

// SPDX-License-Identifier: Apache-2.0
// `aaren-cli health` and `aaren-cli models`: what the server is and whether it serves.
#include <iostream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "client/cli/cli_common.h"
#include "client/cli/cli_flags.h"
#include "client/cli/commands.h"

ABSL_FLAG(std::string, service, "",
          "Service to ask about (e.g. aaren.v1.Aaren); empty: the server as a whole.");

namespace aaren::cli {
namespace {

int RunHealth(const std::vector<std::string>&) {
  auto made = MakeClient();
  if (!made.ok()) return ReportError(made.status(), kExitUsage);
  std::unique_ptr<client::AarenClient> client = *std::move(made);
  auto health = client->Health(absl::GetFlag(FLAGS_service));
  if (!health.ok()) return ReportError(health.status());
  std::cout << grpc::health::v1::HealthCheckResponse::ServingStatus_Name(health->status()) << "\n";
  return health->status() == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk
                                                                            : kExitFailure;
}

std::string InputDescription(const v1::ModelInfo& m) {
  return m.input_kind() == "features" ? absl::StrCat("features[", m.n_features(), "]")
                                      : absl::StrCat("tokens[", m.vocab_size(), "]");
}

int RunModels(const std::vector<std::string>&) {
  auto made = MakeClient();
  if (!made.ok()) return ReportError(made.status(), kExitUsage);
  std::unique_ptr<client::AarenClient> client = *std::move(made);
  auto models = client->ListModels();
  if (!models.ok()) return ReportError(models.status());
  if (absl::GetFlag(FLAGS_json)) {
    std::cout << FormatMessage(*models, /*json=*/true);
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"NAME", "INPUT", "OUTPUT_DIM", "D_MODEL", "HEADS",
                                                 "LAYERS", "D_FF", "POSITION", "STATE_BYTES",
                                                 "PARAMETERS", "BACKEND"}};
  for (const v1::ModelInfo& m : models->models()) {
    rows.push_back({m.name(), InputDescription(m), absl::StrCat(m.output_dim()),
                    absl::StrCat(m.d_model()), absl::StrCat(m.n_heads()),
                    absl::StrCat(m.n_layers()), absl::StrCat(m.d_ff()), m.position(),
                    absl::StrCat(m.state_bytes()), absl::StrCat(m.num_parameters()), m.backend()});
  }
  std::cout << FormatTable(rows);
  return kExitOk;
}

}  // namespace

Subcommand HealthCommand() {
  return {"health",
          "asks the server's grpc.health.v1 service whether it serves",
          "Usage: aaren-cli health [--service NAME]\n\n"
          "Prints the serving status (SERVING, NOT_SERVING, ...). Exit status 0 when SERVING,\n"
          "1 otherwise (including when the server cannot be reached).",
          {"service"},
          0,
          RunHealth};
}

Subcommand ModelsCommand() {
  return {"models",
          "lists the models the server serves",
          "Usage: aaren-cli models [--json]\n\n"
          "A table of the served models (input kind and size, shape, state bytes per session,\n"
          "backend); --json prints the ListModelsResponse as protobuf JSON.",
          {"json"},
          0,
          RunModels};
}

}  // namespace aaren::cli

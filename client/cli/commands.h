// SPDX-License-Identifier: Apache-2.0
// The subcommands of aaren-cli, one factory per cli_*.cc file; aaren_cli_main.cc lists them.
#ifndef AAREN_CLIENT_CLI_COMMANDS_H_
#define AAREN_CLIENT_CLI_COMMANDS_H_

#include "client/cli/subcommand.h"

namespace aaren::cli {

Subcommand HealthCommand();    // cli_server_info.cc
Subcommand ModelsCommand();    // cli_server_info.cc
Subcommand ScoreCommand();     // cli_score.cc
Subcommand StreamCommand();    // cli_stream.cc
Subcommand GenerateCommand();  // cli_generate.cc
Subcommand SessionCommand();   // cli_session.cc
Subcommand BenchCommand();     // cli_bench.cc

}  // namespace aaren::cli

#endif  // AAREN_CLIENT_CLI_COMMANDS_H_

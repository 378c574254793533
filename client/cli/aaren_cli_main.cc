// SPDX-License-Identifier: Apache-2.0
// aaren-cli: the command-line client of Aaren Serve. `aaren-cli --help` lists the subcommands,
// `aaren-cli NAME --help` describes one; client/README.md has examples of each.
//
// Exit status: 0 success; 1 the server or the environment failed the request (and `health`: not
// SERVING); 2 bad flags or bad input.
#include <vector>

#include "client/cli/commands.h"

int main(int argc, char** argv) {
  using namespace aaren::cli;  // NOLINT(build/namespaces): the subcommand factories
  const std::vector<Subcommand> commands = {
      HealthCommand(),   ModelsCommand(),  ScoreCommand(), StreamCommand(),
      GenerateCommand(), SessionCommand(), BenchCommand(),
  };
  return RunSubcommand(commands, argc, argv);
}

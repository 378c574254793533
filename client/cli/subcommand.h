// SPDX-License-Identifier: Apache-2.0
// Subcommand dispatch for aaren-cli: `aaren-cli NAME [flags] [args]`. Every flag is an absl flag,
// but each subcommand accepts only the flags it lists (plus the global ones), and
// `aaren-cli NAME --help` prints its usage with those flags' help and defaults, taken from the
// flag definitions so the two never disagree.
#ifndef AAREN_CLIENT_CLI_SUBCOMMAND_H_
#define AAREN_CLIENT_CLI_SUBCOMMAND_H_

#include <string>
#include <vector>

namespace aaren::cli {

struct Subcommand {
  const char* name;
  const char* summary;             // one line, for `aaren-cli --help`
  const char* usage;               // synopsis lines and a description, for `aaren-cli NAME --help`
  std::vector<const char*> flags;  // flags it reads besides the global ones
  int positional_args;             // how many arguments it takes after its flags (exactly)
  // Runs the subcommand after its flags are parsed; `args` are its positional_args arguments.
  // Returns the process exit status.
  int (*run)(const std::vector<std::string>& args);
};

// Dispatches argv to one of `commands` (argv[1] names it) and returns the exit status: the
// subcommand's, 0 after printing help, 2 for an unknown subcommand, a flag it does not accept
// or the wrong number of arguments.
int RunSubcommand(const std::vector<Subcommand>& commands, int argc, char** argv);

}  // namespace aaren::cli

#endif  // AAREN_CLIENT_CLI_SUBCOMMAND_H_

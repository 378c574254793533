// SPDX-License-Identifier: Apache-2.0
#include "client/cli/subcommand.h"

#include <iostream>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/flags/commandlineflag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "client/cli/cli_common.h"

namespace aaren::cli {
namespace {

constexpr const char* kGlobalFlags[] = {"target",      "timeout",       "max_message_bytes",
                                        "tls_ca_file", "tls_cert_file", "tls_key_file",
                                        "token"};
// absl's own flags, passed through to absl::ParseCommandLine.
constexpr const char* kAbslFlags[] = {"flagfile", "fromenv", "tryfromenv", "undefok", "helpfull"};

constexpr size_t kHelpWidth = 100;
constexpr absl::string_view kHelpIndent = "      ";

// `text` word-wrapped to kHelpWidth columns, each line indented by kHelpIndent.
std::string WrapHelp(absl::string_view text) {
  std::string out;
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() && kHelpIndent.size() + line.size() + 1 + word.size() > kHelpWidth) {
      absl::StrAppend(&out, kHelpIndent, line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(&out, kHelpIndent, line, "\n");
  return out;
}

// "  --name=default" and the wrapped help of one flag, from its definition.
std::string DescribeFlag(const char* name) {
  const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(name);
  if (flag == nullptr) return absl::StrCat("  --", name, "\n");
  std::string value = flag->DefaultValue();
  if (value.empty()) value = "\"\"";
  return absl::StrCat("  --", name, "=", value, "\n", WrapHelp(flag->Help()));
}

void PrintOverview(const std::vector<Subcommand>& commands) {
  std::cout << "aaren-cli: command-line client of Aaren Serve.\n\n"
               "Usage: aaren-cli COMMAND [flags]   (aaren-cli COMMAND --help for its flags)\n\n"
               "Commands:\n";
  size_t width = 0;
  for (const Subcommand& c : commands) width = std::max(width, std::string(c.name).size());
  for (const Subcommand& c : commands) {
    std::cout << "  " << c.name << std::string(width - std::string(c.name).size() + 2, ' ')
              << c.summary << "\n";
  }
  std::cout << "\nGlobal flags:\n";
  for (const char* name : kGlobalFlags) std::cout << DescribeFlag(name);
}

void PrintUsage(const Subcommand& command) {
  std::cout << "aaren-cli " << command.name << ": " << command.summary << "\n\n"
            << command.usage << "\n";
  if (!command.flags.empty()) {
    std::cout << "\nFlags:\n";
    for (const char* name : command.flags) std::cout << DescribeFlag(name);
  }
  std::cout << "\nGlobal flags:\n";
  for (const char* name : kGlobalFlags) std::cout << DescribeFlag(name);
}

enum class FlagCheck { kOk, kHelp, kUnknown };

// Checks the flags in argv[first, argc) against those `command` accepts; `bad` gets the first
// unknown one. Arguments after "--" are positional.
FlagCheck CheckFlags(const Subcommand& command, int first, int argc, char** argv,
                     std::string& bad) {
  absl::flat_hash_set<std::string> allowed(std::begin(kGlobalFlags), std::end(kGlobalFlags));
  allowed.insert(std::begin(kAbslFlags), std::end(kAbslFlags));
  for (const char* name : command.flags) allowed.insert(name);
  for (int i = first; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") break;
    if (arg.size() < 2 || arg[0] != '-') continue;
    absl::string_view name = arg.substr(arg[1] == '-' ? 2 : 1);
    name = name.substr(0, name.find('='));
    // Values such as "-1" or "-0.5" are not flags.
    if (name.empty() || !absl::ascii_isalpha(static_cast<unsigned char>(name[0]))) continue;
    if (name == "help" || name == "h" || name == "helpshort") return FlagCheck::kHelp;
    const bool negated_bool = absl::StartsWith(name, "no") && allowed.contains(name.substr(2));
    if (!allowed.contains(name) && !negated_bool) {
      bad = std::string(arg);
      return FlagCheck::kUnknown;
    }
  }
  return FlagCheck::kOk;
}

}  // namespace

int RunSubcommand(const std::vector<Subcommand>& commands, int argc, char** argv) {
  const absl::string_view first = argc > 1 ? argv[1] : "";
  if (first.empty() || first == "--help" || first == "-h" || first == "help") {
    // `aaren-cli help NAME` is `aaren-cli NAME --help`.
    if (first == "help" && argc > 2) {
      for (const Subcommand& c : commands) {
        if (argv[2] == absl::string_view(c.name)) {
          PrintUsage(c);
          return kExitOk;
        }
      }
    }
    PrintOverview(commands);
    return first.empty() ? kExitUsage : kExitOk;
  }
  const Subcommand* command = nullptr;
  for (const Subcommand& c : commands) {
    if (first == c.name) command = &c;
  }
  if (command == nullptr) {
    std::cerr << "aaren-cli: unknown command '" << first << "' (see aaren-cli --help)\n";
    return kExitUsage;
  }
  SetCommandName(absl::StrCat("aaren-cli ", command->name));
  std::string bad;
  switch (CheckFlags(*command, 2, argc, argv, bad)) {
    case FlagCheck::kHelp:
      PrintUsage(*command);
      return kExitOk;
    case FlagCheck::kUnknown:
      return UsageError(absl::StrCat("unknown flag ", bad));
    case FlagCheck::kOk:
      break;
  }
  // absl sees "aaren-cli NAME" as the program, then the subcommand's arguments.
  std::string program = CommandName();
  std::vector<char*> args = {program.data()};
  args.insert(args.end(), argv + 2, argv + argc);
  absl::SetProgramUsageMessage(command->usage);
  std::vector<char*> positional =
      absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  std::vector<std::string> rest(positional.begin() + 1, positional.end());
  if (static_cast<int>(rest.size()) != command->positional_args) {
    return UsageError(
        absl::StrCat("expected ", command->positional_args, " argument(s), got ", rest.size()));
  }
  return command->run(rest);
}

}  // namespace aaren::cli

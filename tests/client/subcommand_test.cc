// SPDX-License-Identifier: Apache-2.0
// Tests of client/cli/subcommand.h: dispatch, help, and the per-subcommand flag check. A run that
// gets as far as absl::ParseCommandLine (which may happen once per process) runs in a child
// process (EXPECT_EXIT); help and rejected command lines return before it and run in-process.
#include "client/cli/subcommand.h"

#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/flags/flag.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/cli/cli_flags.h"

namespace aaren::cli {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

// Prints what it received to stderr, for the parent of an EXPECT_EXIT to match.
int EchoRun(const std::vector<std::string>& args) {
  std::cerr << "ran with [" << absl::StrJoin(args, "|") << "] json=" << absl::GetFlag(FLAGS_json)
            << " model=" << absl::GetFlag(FLAGS_model)
            << " in_flight=" << absl::GetFlag(FLAGS_in_flight)
            << " target=" << absl::GetFlag(FLAGS_target) << "\n";
  return 7;
}

std::vector<Subcommand> Commands() {
  return {
      {"alpha",
       "does alpha things",
       "Usage: aaren-cli alpha --model M ARG",
       {"model", "json"},
       1,
       EchoRun},
      {"beta-long",
       "does beta things",
       "Usage: aaren-cli beta-long [--in_flight N]",
       {"in_flight"},
       0,
       EchoRun},
  };
}

// RunSubcommand on {"aaren-cli", args...}.
int Dispatch(std::vector<std::string> args) {
  args.insert(args.begin(), "aaren-cli");
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  return RunSubcommand(Commands(), static_cast<int>(argv.size()), argv.data());
}

struct Output {
  int status;
  std::string out;
  std::string err;
};

// Dispatch, capturing stdout and stderr; for command lines that never reach the flag parser.
Output DispatchCaptured(std::vector<std::string> args) {
  ::testing::internal::CaptureStdout();
  ::testing::internal::CaptureStderr();
  const int status = Dispatch(std::move(args));
  std::string out = ::testing::internal::GetCapturedStdout();
  return {status, out, ::testing::internal::GetCapturedStderr()};
}

TEST(SubcommandTest, NoCommandPrintsTheOverviewAndIsAUsageError) {
  const Output o = DispatchCaptured({});
  EXPECT_EQ(o.status, 2);
  EXPECT_THAT(o.out, HasSubstr("Usage: aaren-cli COMMAND"));
}

TEST(SubcommandTest, HelpListsCommandsAndGlobalFlagsWithDefaults) {
  for (const char* help : {"--help", "-h", "help"}) {
    const Output o = DispatchCaptured({help});
    EXPECT_EQ(o.status, 0) << help;
    EXPECT_THAT(o.out, HasSubstr("  alpha      does alpha things\n")) << help;
    EXPECT_THAT(o.out, HasSubstr("  beta-long  does beta things\n")) << help;
    EXPECT_THAT(o.out, HasSubstr("Global flags:\n  --target=localhost:50051\n")) << help;
    EXPECT_THAT(o.out, HasSubstr("--timeout=")) << help;
    EXPECT_THAT(o.out, HasSubstr("--max_message_bytes=67108864")) << help;
    EXPECT_EQ(o.err, "") << help;
  }
}

TEST(SubcommandTest, CommandHelpListsItsOwnFlags) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"alpha", "--help"},
                                             {"alpha", "-h"},
                                             {"alpha", "--model=m", "--helpshort"},
                                             {"help", "alpha"}}) {
    const Output o = DispatchCaptured(args);
    EXPECT_EQ(o.status, 0) << args.back();
    EXPECT_THAT(o.out, HasSubstr("aaren-cli alpha: does alpha things\n\nUsage: aaren-cli alpha"));
    EXPECT_THAT(o.out, HasSubstr("Flags:\n  --model=\"\"\n      Model name"));
    EXPECT_THAT(o.out, HasSubstr("  --json=false\n"));
    EXPECT_THAT(o.out, Not(HasSubstr("--in_flight")));
    EXPECT_THAT(o.out, HasSubstr("Global flags:\n  --target=localhost:50051\n"));
  }
}

TEST(SubcommandTest, HelpWrapsLongFlagHelp) {
  const Output o = DispatchCaptured({"beta-long", "--help"});
  EXPECT_EQ(o.status, 0);
  EXPECT_THAT(o.out, HasSubstr("  --in_flight=0\n      Most calls in flight"));
  for (absl::string_view line : absl::StrSplit(o.out, '\n')) {
    EXPECT_LE(line.size(), 100u) << line;
  }
}

TEST(SubcommandTest, UnknownCommandIsAUsageError) {
  const Output o = DispatchCaptured({"gamma", "--json"});
  EXPECT_EQ(o.status, 2);
  EXPECT_EQ(o.err, "aaren-cli: unknown command 'gamma' (see aaren-cli --help)\n");
  EXPECT_EQ(o.out, "");
}

TEST(SubcommandTest, FlagOfAnotherCommandIsAUsageError) {
  Output o = DispatchCaptured({"alpha", "--model", "m", "--in_flight=3", "x"});
  EXPECT_EQ(o.status, 2);
  EXPECT_EQ(o.err, "aaren-cli alpha: unknown flag --in_flight=3 (see aaren-cli alpha --help)\n");
  o = DispatchCaptured({"beta-long", "-json"});
  EXPECT_EQ(o.status, 2);
  EXPECT_THAT(o.err, HasSubstr("unknown flag -json"));
  o = DispatchCaptured({"beta-long", "--nosuchflag"});
  EXPECT_EQ(o.status, 2);
  EXPECT_THAT(o.err, HasSubstr("unknown flag --nosuchflag"));
}

TEST(SubcommandDeathTest, RunsTheCommandWithItsFlagsAndArguments) {
  EXPECT_EXIT(std::exit(Dispatch({"alpha", "--model", "demo-lm", "--json", "input.jsonl"})),
              ::testing::ExitedWithCode(7),
              "ran with \\[input.jsonl\\] json=1 model=demo-lm in_flight=0 "
              "target=localhost:50051");
}

TEST(SubcommandDeathTest, AcceptsGlobalFlagsAndNegatedBools) {
  EXPECT_EXIT(std::exit(Dispatch({"alpha", "--target=10.0.0.1:9", "--nojson", "--model=m", "a"})),
              ::testing::ExitedWithCode(7), "ran with \\[a\\] json=0 model=m .*target=10.0.0.1:9");
}

TEST(SubcommandDeathTest, NegativeValuesAreNotFlags) {
  EXPECT_EXIT(std::exit(Dispatch({"beta-long", "--in_flight", "-3"})), ::testing::ExitedWithCode(7),
              "ran with \\[\\] .*in_flight=-3");
}

TEST(SubcommandDeathTest, ArgumentsAfterDoubleDashArePositional) {
  EXPECT_EXIT(std::exit(Dispatch({"alpha", "--model=m", "--", "--in_flight"})),
              ::testing::ExitedWithCode(7), "ran with \\[--in_flight\\] json=0 model=m");
}

TEST(SubcommandDeathTest, WrongNumberOfArgumentsIsAUsageError) {
  EXPECT_EXIT(
      std::exit(Dispatch({"alpha", "--model=m"})), ::testing::ExitedWithCode(2),
      "aaren-cli alpha: expected 1 argument\\(s\\), got 0 \\(see aaren-cli alpha --help\\)");
  EXPECT_EXIT(std::exit(Dispatch({"beta-long", "extra"})), ::testing::ExitedWithCode(2),
              "expected 0 argument\\(s\\), got 1");
}

}  // namespace
}  // namespace aaren::cli

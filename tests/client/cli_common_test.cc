// SPDX-License-Identifier: Apache-2.0
// Tests of client/cli/cli_common.h: error reporting, flags read by every subcommand (set here with
// absl::SetFlag), tables and protobuf output.
#include "client/cli/cli_common.h"

#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/time/time.h"
#include "client/cli/cli_flags.h"

namespace aaren::cli {
namespace {

using ::testing::HasSubstr;

std::string DemoVocabPath() {
  const char* dir = std::getenv("AAREN_SOURCE_DIR");
  return (std::filesystem::path(dir != nullptr ? dir : ".") / "models" / "demo-lm" / "vocab.json")
      .string();
}

v1::ModelInfo DemoLm() {
  v1::ModelInfo model;
  model.set_name("demo-lm");
  model.set_input_kind("tokens");
  model.set_vocab_size(43);
  return model;
}

// Every test starts from the flags' defaults.
class CliCommonTest : public ::testing::Test {
 private:
  absl::FlagSaver saver_;
};

TEST_F(CliCommonTest, ReportErrorPrintsTheCommandAndTheStatus) {
  SetCommandName("aaren-cli session");
  EXPECT_EQ(CommandName(), "aaren-cli session");
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(ReportError(absl::NotFoundError("session 'x' not found")), kExitFailure);
  EXPECT_EQ(ReportError(absl::InvalidArgumentError("bad"), kExitUsage), kExitUsage);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(),
            "aaren-cli session: NOT_FOUND: session 'x' not found\n"
            "aaren-cli session: INVALID_ARGUMENT: bad\n");
}

TEST_F(CliCommonTest, UsageErrorPointsAtHelp) {
  SetCommandName("aaren-cli score");
  ::testing::internal::CaptureStderr();
  EXPECT_EQ(UsageError("--input is required"), kExitUsage);
  EXPECT_EQ(::testing::internal::GetCapturedStderr(),
            "aaren-cli score: --input is required (see aaren-cli score --help)\n");
}

TEST_F(CliCommonTest, ExitStatusesAreDistinct) {
  EXPECT_EQ(kExitOk, 0);
  EXPECT_EQ(kExitFailure, 1);
  EXPECT_EQ(kExitUsage, 2);
}

TEST_F(CliCommonTest, MakeClientUsesTheGlobalFlags) {
  absl::SetFlag(&FLAGS_target, "127.0.0.1:1");
  absl::SetFlag(&FLAGS_timeout, absl::Seconds(5));
  absl::SetFlag(&FLAGS_max_message_bytes, 1 << 20);
  absl::SetFlag(&FLAGS_token, "a-token-of-sixteen+");
  absl::StatusOr<std::unique_ptr<client::AarenClient>> made = MakeClient();
  ASSERT_TRUE(made.ok()) << made.status();
  std::unique_ptr<client::AarenClient> client = *std::move(made);
  EXPECT_EQ(client->options().timeout, absl::Seconds(5));
  EXPECT_EQ(client->options().max_message_bytes, 1 << 20);
  EXPECT_EQ(client->options().token, "a-token-of-sixteen+");
  EXPECT_EQ(client->options().credentials, nullptr);  // no TLS flag: plaintext
  // Nothing listens on port 1: the call fails as the server being unavailable.
  EXPECT_EQ(client->ListModels().status().code(), absl::StatusCode::kUnavailable);
  absl::SetFlag(&FLAGS_token, "");
}

TEST_F(CliCommonTest, MakeClientReadsTheTokenFromTheEnvironmentAndNamesBadTlsFiles) {
  setenv("AAREN_TOKEN", "from-the-environment", 1);
  absl::StatusOr<std::unique_ptr<client::AarenClient>> made = MakeClient();
  ASSERT_TRUE(made.ok()) << made.status();
  EXPECT_EQ((*made)->options().token, "from-the-environment");
  unsetenv("AAREN_TOKEN");
  absl::SetFlag(&FLAGS_tls_ca_file, "/nonexistent/ca.pem");
  made = MakeClient();
  EXPECT_EQ(made.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(made.status().message()), testing::HasSubstr("/nonexistent/ca.pem"));
  absl::SetFlag(&FLAGS_tls_ca_file, "");
}

TEST_F(CliCommonTest, OutputModeFlag) {
  EXPECT_EQ(*OutputModeFlag(v1::OUTPUT_MODE_LAST), v1::OUTPUT_MODE_LAST);  // empty: fallback
  absl::SetFlag(&FLAGS_output_mode, "all");
  EXPECT_EQ(*OutputModeFlag(v1::OUTPUT_MODE_LAST), v1::OUTPUT_MODE_ALL);
  absl::SetFlag(&FLAGS_output_mode, "last");
  EXPECT_EQ(*OutputModeFlag(v1::OUTPUT_MODE_ALL), v1::OUTPUT_MODE_LAST);
  absl::SetFlag(&FLAGS_output_mode, "none");
  EXPECT_EQ(*OutputModeFlag(v1::OUTPUT_MODE_ALL), v1::OUTPUT_MODE_NONE);
  for (const char* bad : {"ALL", "first", "OUTPUT_MODE_ALL", " all"}) {
    absl::SetFlag(&FLAGS_output_mode, bad);
    absl::StatusOr<v1::OutputMode> mode = OutputModeFlag(v1::OUTPUT_MODE_ALL);
    EXPECT_EQ(mode.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(mode.status().message(), HasSubstr(std::string("got '") + bad + "'"));
  }
}

TEST_F(CliCommonTest, OutputModeName) {
  EXPECT_EQ(OutputModeName(v1::OUTPUT_MODE_ALL), "all");
  EXPECT_EQ(OutputModeName(v1::OUTPUT_MODE_LAST), "last");
  EXPECT_EQ(OutputModeName(v1::OUTPUT_MODE_NONE), "none");
}

TEST_F(CliCommonTest, VocabFlagForEmptyFlagIsNoVocabulary) {
  absl::StatusOr<std::optional<Vocab>> vocab = VocabFlagFor(DemoLm());
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  EXPECT_FALSE(vocab->has_value());
}

TEST_F(CliCommonTest, VocabFlagForLoadsAMatchingVocabulary) {
  absl::SetFlag(&FLAGS_vocab, DemoVocabPath());
  absl::StatusOr<std::optional<Vocab>> vocab = VocabFlagFor(DemoLm());
  ASSERT_TRUE(vocab.ok()) << vocab.status();
  ASSERT_TRUE(vocab->has_value());
  EXPECT_EQ((*vocab)->size(), 43u);
}

TEST_F(CliCommonTest, VocabFlagForRejectsMismatches) {
  absl::SetFlag(&FLAGS_vocab, DemoVocabPath());
  v1::ModelInfo bigger = DemoLm();
  bigger.set_vocab_size(44);
  absl::StatusOr<std::optional<Vocab>> vocab = VocabFlagFor(bigger);
  EXPECT_EQ(vocab.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(vocab.status().message(), HasSubstr("has 43 entries but model 'demo-lm'"));

  v1::ModelInfo features;
  features.set_name("demo-ts");
  features.set_input_kind("features");
  features.set_n_features(8);
  vocab = VocabFlagFor(features);
  EXPECT_EQ(vocab.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(vocab.status().message(), HasSubstr("takes features"));

  absl::SetFlag(&FLAGS_vocab, "/nonexistent/vocab.json");
  EXPECT_EQ(VocabFlagFor(DemoLm()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(CliCommonTest, FormatMessageAsText) {
  v1::Session session;
  session.set_session_id("s1");
  session.set_model("demo-lm");
  session.set_position(12);
  EXPECT_EQ(FormatMessage(session, /*json=*/false),
            "session_id: \"s1\"\nmodel: \"demo-lm\"\nposition: 12\n");
  EXPECT_EQ(FormatMessage(v1::Session(), /*json=*/false), "\n");
}

TEST_F(CliCommonTest, FormatMessageAsJsonKeepsProtoNamesAndDefaults) {
  v1::Session session;
  session.set_session_id("s1");
  session.set_position(12);
  const std::string text = FormatMessage(session, /*json=*/true);
  ASSERT_FALSE(text.empty());
  EXPECT_EQ(text.back(), '\n');
  const nlohmann::json doc = nlohmann::json::parse(text);
  EXPECT_EQ(doc["session_id"], "s1");
  EXPECT_EQ(doc["position"], "12");  // int64 is a string in protobuf JSON
  EXPECT_EQ(doc["model"], "");       // defaults are printed
  EXPECT_TRUE(doc.contains("idle_ttl_seconds"));
  EXPECT_FALSE(doc.contains("sessionId"));
}

TEST_F(CliCommonTest, FormatTableAlignsColumns) {
  EXPECT_EQ(
      FormatTable({{"NAME", "INPUT", "D"}, {"demo-lm", "tokens[43]", "128"}, {"x", "", "64"}}),
      "NAME     INPUT       D\n"
      "demo-lm  tokens[43]  128\n"
      "x                    64\n");
}

TEST_F(CliCommonTest, FormatTableWithRaggedOrNoRows) {
  EXPECT_EQ(FormatTable({}), "");
  EXPECT_EQ(FormatTable({{"A"}}), "A\n");
  EXPECT_EQ(FormatTable({{"A", "B"}, {"long"}}), "A     B\nlong\n");
}

}  // namespace
}  // namespace aaren::cli

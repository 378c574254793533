// SPDX-License-Identifier: Apache-2.0
// Tests of client/cli/progress_bar.h: what a bar writes to stderr (captured), when it redraws,
// and that a disabled bar writes nothing.
#include "client/cli/progress_bar.h"

#include <chrono>
#include <string>
#include <thread>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

namespace aaren::cli {
namespace {

using ::testing::EndsWith;
using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

TEST(ProgressBarTest, DisabledBarWritesNothing) {
  ::testing::internal::CaptureStderr();
  {
    ProgressBar bar(100, "tokens", /*enabled=*/false);
    bar.Advance(50);
    std::this_thread::sleep_for(std::chrono::milliseconds(120));
    bar.Advance(50);
    bar.Finish();
  }
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
}

TEST(ProgressBarTest, FinishDrawsTheFinalStateAndEndsTheLine) {
  ProgressBar bar(200, "tokens", /*enabled=*/true);
  bar.Advance(100);  // may draw, if this thread was descheduled for 100 ms
  ::testing::internal::CaptureStderr();
  bar.Finish();
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(out, StartsWith("\r[##########..........]  50%  100/200 tokens  "));
  EXPECT_THAT(out, HasSubstr(" tokens/s"));
  EXPECT_THAT(out, HasSubstr("ETA "));  // half done
  EXPECT_THAT(out, EndsWith("    \n"));
  EXPECT_EQ(out.find('\n'), out.size() - 1);
}

TEST(ProgressBarTest, FinishIsOnce) {
  ProgressBar bar(10, "sequences", /*enabled=*/true);
  bar.Advance(10);
  ::testing::internal::CaptureStderr();
  bar.Finish();
  bar.Finish();
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(out, StartsWith("\r[####################] 100%  10/10 sequences  "));
  EXPECT_THAT(out, Not(HasSubstr("ETA")));  // done
  EXPECT_EQ(out.find('\r', 1), std::string::npos);
  EXPECT_EQ(out.find('\n'), out.size() - 1);
}

TEST(ProgressBarTest, CompactCountsAndOverrun) {
  ProgressBar bar(52'500, "tokens", /*enabled=*/true);
  bar.Advance(27'300);
  ::testing::internal::CaptureStderr();
  bar.Finish();
  std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(out, StartsWith("\r[##########..........]  52%  27.3k/52.5k tokens  "));

  ProgressBar big(4'100'000, "tokens", /*enabled=*/true);
  big.Advance(5'000'000);  // more than the total: a full bar, never over 100%
  ::testing::internal::CaptureStderr();
  big.Finish();
  out = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(out, StartsWith("\r[####################] 100%  5.0M/4.1M tokens  "));
}

TEST(ProgressBarTest, AdvanceRedrawsAfterOneHundredMilliseconds) {
  ProgressBar bar(1000, "tokens", /*enabled=*/true);
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  ::testing::internal::CaptureStderr();
  bar.Advance(250);
  std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(out, StartsWith("\r[#####...............]  25%  250/1.0k tokens  "));
  EXPECT_THAT(out, HasSubstr("ETA "));
  EXPECT_THAT(out, Not(HasSubstr("\n")));  // redrawn in place

  // The next draw waits another 100 ms; then it shows the new count.
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  ::testing::internal::CaptureStderr();
  bar.Advance(250);
  out = ::testing::internal::GetCapturedStderr();
  EXPECT_THAT(out, StartsWith("\r[##########..........]  50%  500/1.0k tokens  "));
}

TEST(ProgressBarTest, RateIsUnitsPerSecond) {
  ProgressBar bar(1'000'000, "tokens", /*enabled=*/true);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  ::testing::internal::CaptureStderr();
  bar.Advance(1000);  // ~5k tokens/s at most: 1000 tokens in >= 200 ms
  bar.Finish();
  const std::string out = ::testing::internal::GetCapturedStderr();
  const size_t rate_end = out.find(" tokens/s");
  ASSERT_NE(rate_end, std::string::npos) << out;
  const size_t rate_start = out.rfind("  ", rate_end) + 2;
  const std::string rate = out.substr(rate_start, rate_end - rate_start);
  // "5.0k" or less: "4.2k", "950", ...
  if (rate.back() == 'k') {
    EXPECT_LE(std::stod(rate.substr(0, rate.size() - 1)), 5.0) << out;
  } else {
    EXPECT_LE(std::stod(rate), 5000) << out;
  }
}

TEST(ProgressBarTest, StderrIsNotATerminalWhenRedirectedToAFile) {
  ::testing::internal::CaptureStderr();  // points stderr at a temporary file
  const bool terminal = ProgressBar::StderrIsTerminal();
  ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(terminal);
}

}  // namespace
}  // namespace aaren::cli

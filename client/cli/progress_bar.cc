// SPDX-License-Identifier: Apache-2.0
#include "client/cli/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace aaren::cli {
namespace {

constexpr int kBarWidth = 20;

// 950, 27.3k, 4.1M.
std::string Compact(double v) {
  if (v >= 1e6) return absl::StrFormat("%.1fM", v / 1e6);
  if (v >= 1e3) return absl::StrFormat("%.1fk", v / 1e3);
  return absl::StrFormat("%.0f", v);
}

}  // namespace

ProgressBar::ProgressBar(int64_t total, std::string unit, bool enabled)
    : total_(std::max<int64_t>(total, 1)),
      unit_(std::move(unit)),
      enabled_(enabled),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {}

bool ProgressBar::StderrIsTerminal() { return isatty(STDERR_FILENO) == 1; }

void ProgressBar::Advance(int64_t n) {
  done_ += n;
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ >= std::chrono::milliseconds(100)) Draw();
}

void ProgressBar::Finish() {
  if (!enabled_ || finished_) return;
  finished_ = true;
  Draw();
  std::fputc('\n', stderr);
}

void ProgressBar::Draw() {
  last_draw_ = std::chrono::steady_clock::now();
  const double fraction = std::min(1.0, static_cast<double>(done_) / total_);
  const double seconds = std::chrono::duration<double>(last_draw_ - start_).count();
  const double rate = seconds > 0 ? done_ / seconds : 0;
  const int filled = static_cast<int>(fraction * kBarWidth);
  std::string line =
      absl::StrCat("\r[", std::string(filled, '#'), std::string(kBarWidth - filled, '.'), "] ",
                   absl::StrFormat("%3.0f%%", fraction * 100), "  ", Compact(done_), "/",
                   Compact(total_), " ", unit_, "  ", Compact(rate), " ", unit_, "/s");
  if (rate > 0 && done_ < total_) {
    absl::StrAppend(&line, absl::StrFormat("  ETA %.0fs", (total_ - done_) / rate));
  }
  // Pad over the remains of a longer previous line.
  absl::StrAppend(&line, "    ");
  std::fputs(line.c_str(), stderr);
  std::fflush(stderr);
}

}  // namespace aaren::cli

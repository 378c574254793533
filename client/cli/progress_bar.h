// SPDX-License-Identifier: Apache-2.0
// ProgressBar: a one-line progress display on stderr for long client jobs (aaren-cli score),
//   [##########..........]  52%  27.3k/52.5k tokens  12.4k tokens/s  ETA 2s
// redrawn in place at most ten times a second. Disabled bars do nothing, so callers need no
// branches. Not thread-safe: one thread drives it.
#ifndef AAREN_CLIENT_CLI_PROGRESS_BAR_H_
#define AAREN_CLIENT_CLI_PROGRESS_BAR_H_

#include <chrono>
#include <cstdint>
#include <string>

namespace aaren::cli {

class ProgressBar {
 public:
  // `total` units of work named `unit` ("tokens"); draws only when `enabled`.
  ProgressBar(int64_t total, std::string unit, bool enabled);

  // Counts `n` more units done; redraws if the last draw is over 100 ms old.
  void Advance(int64_t n);
  // Draws the final state and ends the line (once; no-op when disabled).
  void Finish();

  // Whether stderr is a terminal (the default for showing a bar).
  static bool StderrIsTerminal();

 private:
  void Draw();

  int64_t total_;
  int64_t done_ = 0;
  std::string unit_;
  bool enabled_;
  bool finished_ = false;
  std::chrono::steady_clock::time_point start_;
  std::chrono::steady_clock::time_point last_draw_;
};

}  // namespace aaren::cli

#endif  // AAREN_CLIENT_CLI_PROGRESS_BAR_H_

// SPDX-License-Identifier: Apache-2.0
// libFuzzer harness: the model loader. The input is a config.json and a model.safetensors
// image: the first two bytes give the config's length (little endian), the config follows, the
// rest is the weights file; a length of 0xffff means the whole rest is the config (no weights),
// so configs past 64 KiB are reached too (scripts/fuzz.sh raises -max_len for this harness). Both
// are parsed and, when they load, the model's state bounds are computed (core/state_bounds.h).
// Properties: ASan/UBSan find nothing, the loader never aborts (every bad input is a status), and a
// model that loads has bounds that are numbers >= 0 (they are summed in float64, so finite weights
// give no NaN; weights near FLT_MAX may give +inf).
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/types/span.h"
#include "core/model.h"
#include "core/state_bounds.h"
#include "tests/fuzz/fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  size_t config_size = static_cast<size_t>(data[0]) | (static_cast<size_t>(data[1]) << 8);
  if (config_size == 0xffff) config_size = size - 2;
  if (config_size > size - 2) return 0;
  const absl::string_view config(reinterpret_cast<const char*>(data + 2), config_size);
  const absl::Span<const uint8_t> weights(data + 2 + config_size, size - 2 - config_size);
  auto model = aaren::Model::FromBytes("fuzz", config, weights);
  if (!model.ok()) return 0;
  // Keep the work per input small: bounds cost O(L D^2).
  const aaren::ModelConfig& c = (*model)->config();
  if (c.n_layers * c.d_model * c.d_model > (1 << 22)) return 0;
  const aaren::StateBounds bounds = aaren::ComputeStateBounds(**model);
  for (float b : bounds.score) {
    if (!(b >= 0)) aaren::fuzz::Fail("a score bound that is NaN or negative");
  }
  for (float b : bounds.value) {
    if (!(b >= 0)) aaren::fuzz::Fail("a value bound that is NaN or negative");
  }
  return 0;
}

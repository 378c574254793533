// SPDX-License-Identifier: Apache-2.0
// Flags of aaren-cli that several subcommands read (each subcommand's own flags live in its
// cli_*.cc). The global ones apply to every subcommand that talks to a server.
#ifndef AAREN_CLIENT_CLI_CLI_FLAGS_H_
#define AAREN_CLIENT_CLI_CLI_FLAGS_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/flags/declare.h"
#include "absl/time/time.h"

// Global.
ABSL_DECLARE_FLAG(std::string, target);
ABSL_DECLARE_FLAG(absl::Duration, timeout);
ABSL_DECLARE_FLAG(int, max_message_bytes);
ABSL_DECLARE_FLAG(std::string, tls_ca_file);
ABSL_DECLARE_FLAG(std::string, tls_cert_file);
ABSL_DECLARE_FLAG(std::string, tls_key_file);
ABSL_DECLARE_FLAG(std::string, token);

// Shared by several subcommands.
ABSL_DECLARE_FLAG(std::string, model);
ABSL_DECLARE_FLAG(std::string, session_id);
ABSL_DECLARE_FLAG(std::string, vocab);
ABSL_DECLARE_FLAG(bool, json);
ABSL_DECLARE_FLAG(std::string, output_mode);
ABSL_DECLARE_FLAG(uint32_t, idle_ttl);
ABSL_DECLARE_FLAG(uint64_t, seed);
ABSL_DECLARE_FLAG(int, in_flight);
ABSL_DECLARE_FLAG(int, batch_sequences);
ABSL_DECLARE_FLAG(std::optional<float>, mca_alpha);
ABSL_DECLARE_FLAG(uint64_t, mca_seed);

#endif  // AAREN_CLIENT_CLI_CLI_FLAGS_H_

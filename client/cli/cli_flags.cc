// SPDX-License-Identifier: Apache-2.0
#include "client/cli/cli_flags.h"

#include "absl/flags/flag.h"

ABSL_FLAG(std::string, target, "localhost:50051", "Server address (host:port or a gRPC target).");
ABSL_FLAG(absl::Duration, timeout, absl::Seconds(60),
          "Deadline of each unary call and of generate, e.g. 500ms, 30s, 5m; 0 = none. "
          "Streams (stream, bench) have none.");
ABSL_FLAG(int, max_message_bytes, 64 << 20, "Largest message sent or received.");
ABSL_FLAG(std::string, tls_ca_file, "",
          "Connect with TLS, verifying the server against these PEM CAs (a server with "
          "--tls_cert_file).");
ABSL_FLAG(std::string, tls_cert_file, "",
          "With --tls_ca_file: this client's PEM certificate (a server that requires mutual TLS).");
ABSL_FLAG(std::string, tls_key_file, "", "The PEM private key of --tls_cert_file.");
ABSL_FLAG(std::string, token, "",
          "Bearer token (a server with --auth_tokens_file); default: $AAREN_TOKEN.");

ABSL_FLAG(std::string, model, "", "Model name, as listed by `aaren-cli models`.");
ABSL_FLAG(std::string, session_id, "", "Session id.");
ABSL_FLAG(std::string, vocab, "",
          "vocab.json of a token model ({\"chars\": [...]}, id i is chars[i]): read and print "
          "text instead of token ids.");
ABSL_FLAG(bool, json, false, "Print JSON instead of a table or text.");
ABSL_FLAG(std::string, output_mode, "",
          "all (a row per token), last (the last token's row) or none; empty: the "
          "subcommand's default (score, bench: all; stream: last).");
ABSL_FLAG(uint32_t, idle_ttl, 0, "Idle TTL in seconds of sessions created; 0 = server default.");
ABSL_FLAG(uint64_t, seed, 1, "Random seed.");
ABSL_FLAG(int, in_flight, 0,
          "Most calls in flight at once; 0 = the subcommand's default (score: 4; bench: "
          "4 for --mode score, 256 for --mode sessions).");
ABSL_FLAG(int, batch_sequences, 16, "Sequences per Score request.");
ABSL_FLAG(std::optional<float>, mca_alpha, std::nullopt,
          "score, stream: Monte-Carlo Attention with this alpha (finite, >= 0; 0: exact). Unset: "
          "the server's default (--mca_alpha of aaren-server).");
ABSL_FLAG(uint64_t, mca_seed, 0, "score, stream: MCA seed (with --mca_alpha).");

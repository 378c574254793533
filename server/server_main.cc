// SPDX-License-Identifier: Apache-2.0
// aaren-server: serves Aaren models over gRPC (aaren.v1.Aaren, grpc.health.v1, reflection),
// optionally over TLS / mutual TLS with bearer-token tenants (README, "Security").
// With no flags it serves the bundled demo models on port 50051. SIGTERM/SIGINT: health goes
// NOT_SERVING, no new calls are accepted, in-flight calls get --drain_timeout to finish, then
// the process exits 0.
#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "core/cpu_backend.h"
#include "engine/engine.h"
#include "engine/served_model.h"
#include "engine/store/rocksdb_store.h"
#include "engine/store/state_store.h"
#include "server/aaren_v1/aaren_service.h"
#include "server/auth/authenticator.h"
#include "server/auth/reflection_gate.h"
#include "server/auth/tls_credentials.h"
#include "server/backend_choice.h"
#include "server/call_env.h"
#include "server/echo_service.h"
#include "server/kserve_v2/v2_grpc_service.h"
#include "server/kserve_v2/v2_http_server.h"
#include "server/kserve_v2/v2_json.h"
#include "server/logging.h"
#include "server/metrics/metrics_registry.h"
#include "server/metrics/server_metrics.h"

ABSL_FLAG(std::string, host, "0.0.0.0", "Address to listen on (127.0.0.1: this machine only)");
ABSL_FLAG(int32_t, port, 50051, "gRPC port; 0 picks a free one (see --port_file)");
ABSL_FLAG(std::string, port_file, "",
          "If set, the chosen port is written to this file once the server accepts calls");
ABSL_FLAG(std::vector<std::string>, model_dir,
          std::vector<std::string>(absl::StrSplit(AAREN_DEFAULT_MODEL_DIRS, ',')),
          "Model directory to serve (config.json + model.safetensors); repeat the flag or give "
          "a comma-separated list. A model's name is its directory's name. Default: the "
          "bundled demo models");
ABSL_FLAG(std::string, device, "auto",
          "Backend: auto (CUDA when built with it and a GPU is present, else CPU), cpu, cuda");
ABSL_FLAG(int32_t, cuda_device, 0, "CUDA device ordinal used by --device=cuda/auto");
ABSL_FLAG(int64_t, max_sessions, 16384,
          "State-pool slots: sessions ready to run at once (over all models); the least "
          "recently used idle session moves to the host tier when the pool is full. The pool "
          "is GPU memory with the CUDA backend, host memory with the CPU one");
ABSL_FLAG(int64_t, state_pool_bytes, 0,
          "If > 0, size the state pool in bytes instead of --max_sessions: slots = bytes / the "
          "largest served model's state_bytes");
ABSL_FLAG(int64_t, host_tier_sessions, 1000000,
          "Sessions that may wait in the host tier; with a full pool and host tier, new "
          "sessions get RESOURCE_EXHAUSTED");
ABSL_FLAG(absl::Duration, session_idle_ttl, absl::Hours(1),
          "Default idle time after which a session expires (a request may set its own)");
ABSL_FLAG(int64_t, max_batch_tokens, 8192,
          "Most tokens per scheduler tick and model (one backend Forward); long prefills are "
          "cut into chunks");
ABSL_FLAG(int64_t, batch_delay_us, 0,
          "How long a tick waits for more work before running (0: run at once; work that "
          "arrives during a Forward joins the next tick anyway)");
ABSL_FLAG(int64_t, max_sequence_tokens, 1 << 20,
          "Most tokens in one sequence, prefix, append or prompt");
ABSL_FLAG(int32_t, max_message_bytes, 64 << 20, "Largest gRPC message received or sent");
ABSL_FLAG(int32_t, threads, 0, "Backend threads (0: one per core)");
ABSL_FLAG(float, mca_alpha, 0.0f,
          "Monte-Carlo Attention alpha for requests that do not enable MCA themselves (0: MCA off, "
          "exact value projections; > 0: MCA with this alpha)");
ABSL_FLAG(uint64_t, mca_seed, 0, "MCA seed used with --mca_alpha");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(15),
          "On SIGTERM/SIGINT, how long in-flight calls may take before they are cancelled");
ABSL_FLAG(absl::Duration, keepalive_time, absl::Seconds(60),
          "Interval of HTTP/2 keepalive pings to idle clients");
ABSL_FLAG(absl::Duration, keepalive_timeout, absl::Seconds(20),
          "A keepalive ping not answered within this closes the connection");
ABSL_FLAG(bool, enable_echo, false,
          "Also serve aaren.v1.BenchEcho (for `aaren-cli bench --mode echo`)");
ABSL_FLAG(int32_t, http_port, 8000,
          "Port of the KServe v2 / Triton REST API (8000, as Triton's); 0 disables it. HTTPS "
          "with the gRPC port's TLS files when they are given");
ABSL_FLAG(int32_t, http_threads, 64,
          "Worker threads of the REST API: each serves one connection at a time (keep-alive "
          "included), so this bounds the REST clients served at once");
ABSL_FLAG(int32_t, metrics_port, 8002,
          "Port of the Prometheus /metrics endpoint (8002, as Triton's); 0 disables it");
ABSL_FLAG(std::string, metrics_host, "",
          "Address the metrics endpoint listens on; empty: the same as --host");
ABSL_FLAG(int64_t, max_request_tokens, 1 << 21,
          "Most tokens in one Score call, all its sequences together");
ABSL_FLAG(uint32_t, max_generate_tokens, 4096, "Largest max_tokens a Generate call may ask for");
ABSL_FLAG(int64_t, memory_budget_bytes, 0,
          "If > 0, memory the engine may hold for sessions (every tier) and queued work; new "
          "sessions and work beyond it get RESOURCE_EXHAUSTED");
ABSL_FLAG(int64_t, max_sessions_per_tenant, 0,
          "If > 0, most sessions one tenant may hold (both tiers)");
ABSL_FLAG(int64_t, max_streams_per_tenant, 0,
          "If > 0, most Stream and Generate calls one tenant may have open at once");
ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM certificate (chain) of the gRPC port; with --tls_key_file the port speaks TLS");
ABSL_FLAG(std::string, tls_key_file, "", "PEM private key of --tls_cert_file");
ABSL_FLAG(std::string, tls_client_ca_file, "",
          "PEM CA certificates: with TLS on, clients must present a certificate they signed "
          "(mutual TLS)");
ABSL_FLAG(std::string, auth_tokens_file, "",
          "File of `TENANT TOKEN` lines: every call but health needs `authorization: Bearer "
          "TOKEN`, and sessions belong to the token's tenant. Re-read on SIGHUP");
ABSL_FLAG(bool, reflection, true,
          "Serve gRPC server reflection (with --auth_tokens_file it needs a token too)");
ABSL_FLAG(bool, access_log, false,
          "Log one line per call: rpc, tenant, status code, duration, peer (never the payload)");
ABSL_FLAG(std::string, state_store, "",
          "Where sessions outlive the process: empty = memory only; a directory (or "
          "rocksdb:DIR) = embedded RocksDB (README, \"Durability\"); redis://HOST:PORT[/DB] = "
          "Redis, shared by replicas (README, \"Replicas\")");
ABSL_FLAG(std::string, state_store_password_file, "",
          "Redis --state_store: a file holding the AUTH password (or \"USER PASSWORD\" for an "
          "ACL user) on its first line");
ABSL_FLAG(std::string, replica_id, "",
          "This server's name in the session records it writes to a shared store (default: "
          "HOSTNAME/PID); a replica that loads a record another one wrote counts an ownership "
          "move");
ABSL_FLAG(std::string, durability, "",
          "none, checkpoint or ack (default: checkpoint with --state_store, none without)");
ABSL_FLAG(absl::Duration, checkpoint_interval, absl::Seconds(1),
          "--durability=checkpoint: changed sessions are written at least this often");
ABSL_FLAG(std::string, backup_dir, "",
          "On SIGUSR1, write a consistent checkpoint of the RocksDB --state_store into a new "
          "directory here");
ABSL_FLAG(std::string, log_level, "info", "debug, info, warn or error");
ABSL_FLAG(std::string, log_format, "text", "text (logfmt) or json");

namespace aaren {
namespace {

// absl list flags keep only their last occurrence: fold every --model_dir into one list first.
std::vector<char*> MergeRepeatedModelDirs(int argc, char** argv, std::string& merged) {
  std::vector<std::string> dirs;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    std::string arg = argv[i];
    for (const char* prefix : {"--model_dir=", "-model_dir="}) {
      if (arg.rfind(prefix, 0) == 0) {
        dirs.push_back(arg.substr(std::string(prefix).size()));
        arg.clear();
      }
    }
    if ((arg == "--model_dir" || arg == "-model_dir") && i + 1 < argc) {
      dirs.push_back(argv[++i]);
      continue;
    }
    if (!arg.empty() || i == 0) rest.push_back(argv[i]);
  }
  if (!dirs.empty()) {
    merged = "--model_dir=" + absl::StrJoin(dirs, ",");
    rest.push_back(merged.data());
  }
  return rest;
}

absl::StatusOr<Durability> ParseDurability(const std::string& name, bool have_store) {
  if (name.empty()) return have_store ? Durability::kCheckpoint : Durability::kNone;
  Durability d;
  if (name == "none") {
    d = Durability::kNone;
  } else if (name == "checkpoint") {
    d = Durability::kCheckpoint;
  } else if (name == "ack") {
    d = Durability::kAck;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("--durability: '", name, "' is not none, checkpoint or ack"));
  }
  if (d != Durability::kNone && !have_store) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--durability=", name,
        " needs --state_store (a directory for the RocksDB store, or redis://HOST:PORT)"));
  }
  if (d == Durability::kNone && have_store) {
    return absl::InvalidArgumentError(
        "--durability=none with --state_store: nothing would be written to the store; drop "
        "--state_store or pick checkpoint or ack");
  }
  return d;
}

absl::string_view DurabilityName(Durability d) {
  switch (d) {
    case Durability::kNone:
      break;
    case Durability::kCheckpoint:
      return "checkpoint";
    case Durability::kAck:
      return "ack";
  }
  return "none";
}

// The first line of `path`, without its line ending; errors name `flag`.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, absl::string_view flag) {
  std::ifstream in(path);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, ": cannot read '", path, "': ", std::strerror(errno)));
  }
  std::string line;
  std::getline(in, line);
  absl::StripTrailingAsciiWhitespace(&line);
  if (line.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": '", path, "' is empty"));
  }
  return line;
}

// SIGUSR1: a RocksDB checkpoint of the store in a new directory under `backup_dir`.
void BackUp(StateStore* store, const std::string& backup_dir) {
  auto* rocksdb = dynamic_cast<RocksDbStore*>(store);
  if (rocksdb == nullptr || backup_dir.empty()) {
    Log(LogLevel::kWarn,
        "SIGUSR1: no backup made (needs a RocksDB --state_store and --backup_dir)");
    return;
  }
  const std::string dir =
      (std::filesystem::path(backup_dir) / absl::StrCat("aaren-", NowUnixMs())).string();
  std::error_code ec;
  std::filesystem::create_directories(backup_dir, ec);
  const int64_t start_ns = SteadyNowNs();
  if (absl::Status st = rocksdb->Checkpoint(dir); !st.ok()) {
    Log(LogLevel::kError, "backup failed", {{"dir", dir}, {"error", std::string(st.message())}});
    return;
  }
  Log(LogLevel::kInfo, "backup written",
      {{"dir", dir},
       {"seconds", absl::StrFormat("%.3f", static_cast<double>(SteadyNowNs() - start_ns) * 1e-9)}});
}

int Fail(const absl::Status& status) {
  Log(LogLevel::kError, "startup failed", {{"error", std::string(status.message())}});
  return 2;
}

int Run() {
  auto choice = ChooseBackend(absl::GetFlag(FLAGS_device), absl::GetFlag(FLAGS_cuda_device));
  if (!choice.ok()) return Fail(choice.status());
  Log(LogLevel::kInfo, "backend chosen",
      {{"device", choice->device},
       {"reason", choice->reason},
       {"gpu", choice->description.empty() ? "none" : choice->description}});

  CpuBackendOptions cpu_options;
  cpu_options.num_threads = absl::GetFlag(FLAGS_threads);
  std::vector<std::filesystem::path> dirs;
  for (const std::string& d : absl::GetFlag(FLAGS_model_dir)) {
    if (!d.empty()) dirs.emplace_back(d);
  }
  if (dirs.empty()) return Fail(absl::InvalidArgumentError("--model_dir: no model to serve"));
  auto registry = ModelRegistry::Load(dirs, MakeBackendFactory(*choice, cpu_options));
  if (!registry.ok()) return Fail(registry.status());
  for (const ServedModel* m : (*registry)->models()) {
    Log(LogLevel::kInfo, "model loaded",
        {{"model", m->name},
         {"input", std::string(InputKindName(m->config().input_kind))},
         {"d_model", absl::StrCat(m->config().d_model)},
         {"n_layers", absl::StrCat(m->config().n_layers)},
         {"state_bytes", absl::StrCat(m->config().state_bytes())},
         {"config_hash", m->config_hash}});
  }

  EngineOptions options;
  options.store.pool_sessions = absl::GetFlag(FLAGS_max_sessions);
  if (const int64_t pool_bytes = absl::GetFlag(FLAGS_state_pool_bytes); pool_bytes > 0) {
    int64_t largest = 1;
    for (const ServedModel* m : (*registry)->models()) {
      largest = std::max<int64_t>(largest, m->config().state_bytes());
    }
    options.store.pool_sessions = pool_bytes / largest;
    if (options.store.pool_sessions < 1) {
      return Fail(absl::InvalidArgumentError(absl::StrCat(
          "--state_pool_bytes: ", pool_bytes, " bytes hold no session of ", largest, " bytes")));
    }
  }
  options.store.host_sessions = absl::GetFlag(FLAGS_host_tier_sessions);
  options.store.default_idle_ttl_s = static_cast<uint32_t>(
      std::max<int64_t>(1, absl::ToInt64Seconds(absl::GetFlag(FLAGS_session_idle_ttl))));
  options.max_batch_tokens = absl::GetFlag(FLAGS_max_batch_tokens);
  options.batch_delay_us = absl::GetFlag(FLAGS_batch_delay_us);
  options.max_sequence_tokens = absl::GetFlag(FLAGS_max_sequence_tokens);
  options.max_request_tokens = absl::GetFlag(FLAGS_max_request_tokens);
  options.max_reply_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  options.max_generate_tokens = absl::GetFlag(FLAGS_max_generate_tokens);
  options.memory_budget_bytes = absl::GetFlag(FLAGS_memory_budget_bytes);
  options.store.max_sessions_per_tenant = absl::GetFlag(FLAGS_max_sessions_per_tenant);
  // An append's retry record holds its length in 32 bits (AppendRecord): a longer append
  // could never be replayed, so no sequence may be that long.
  if (options.max_sequence_tokens < 1 ||
      options.max_sequence_tokens > std::numeric_limits<int32_t>::max()) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--max_sequence_tokens: ", options.max_sequence_tokens, " is not in [1, ",
                     std::numeric_limits<int32_t>::max(), "]")));
  }
  if (options.max_request_tokens < options.max_sequence_tokens) {
    return Fail(
        absl::InvalidArgumentError("--max_request_tokens: must be at least --max_sequence_tokens"));
  }
  if (options.max_generate_tokens < 1) {
    return Fail(absl::InvalidArgumentError("--max_generate_tokens: must be at least 1"));
  }
  if (options.store.pool_sessions < 1 || options.store.host_sessions < 0) {
    return Fail(
        absl::InvalidArgumentError("--max_sessions must be >= 1 and --host_tier_sessions >= 0"));
  }
  if (options.max_batch_tokens < 64) {
    return Fail(absl::InvalidArgumentError("--max_batch_tokens: must be at least 64"));
  }
  if (options.max_sequence_tokens < 1) {
    return Fail(absl::InvalidArgumentError("--max_sequence_tokens: must be at least 1"));
  }
  // Durability (README, "Durability").
  StateStoreOptions store_options;
  if (const std::string path = absl::GetFlag(FLAGS_state_store_password_file); !path.empty()) {
    auto password = ReadSecretFile(path, "--state_store_password_file");
    if (!password.ok()) return Fail(password.status());
    store_options.password = *std::move(password);
  }
  options.replica_id = absl::GetFlag(FLAGS_replica_id);
  if (options.replica_id.empty()) {
    char host[256] = {};
    gethostname(host, sizeof(host) - 1);
    options.replica_id = absl::StrCat(host, "/", getpid());
  }
  store_options.client_name = absl::StrCat("aaren-server/", options.replica_id);
  auto state_store = OpenStateStore(absl::GetFlag(FLAGS_state_store), store_options);
  if (!state_store.ok()) return Fail(state_store.status());
  auto durability = ParseDurability(absl::GetFlag(FLAGS_durability), *state_store != nullptr);
  if (!durability.ok()) return Fail(durability.status());
  options.state_store = state_store->get();
  options.durability = *durability;
  options.checkpoint_interval_ms =
      absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_checkpoint_interval));
  if (options.checkpoint_interval_ms < 1) {
    return Fail(absl::InvalidArgumentError("--checkpoint_interval: must be at least 1ms"));
  }
  McaOptions default_mca;
  default_mca.alpha = absl::GetFlag(FLAGS_mca_alpha);
  default_mca.seed = absl::GetFlag(FLAGS_mca_seed);
  if (!(std::isfinite(default_mca.alpha) && default_mca.alpha >= 0.0f)) {
    return Fail(absl::InvalidArgumentError(
        absl::StrCat("--mca_alpha: ", default_mca.alpha, " is not a finite number >= 0")));
  }
  default_mca.enabled = default_mca.alpha > 0.0f;
  std::unique_ptr<MetricsRegistry> metrics_registry = MakeMetricsRegistry();
  ServerMetrics metrics(
      metrics_registry.get(),
      BuildInfo{AAREN_VERSION, AAREN_GIT_SHA, choice->device, metrics_registry->implementation()},
      **registry);
  // The v2 protocol's per-model statistics observe the engine too.
  v2::V2Statistics v2_stats(**registry);
  ObserverTee observers({&metrics, &v2_stats});
  options.observer = &observers;

  // Security: TLS credentials and bearer tokens (README, "Security").
  TlsFiles tls{absl::GetFlag(FLAGS_tls_cert_file), absl::GetFlag(FLAGS_tls_key_file),
               absl::GetFlag(FLAGS_tls_client_ca_file)};
  auto credentials = MakeServerCredentials(tls);
  if (!credentials.ok()) return Fail(credentials.status());
  std::unique_ptr<Authenticator> auth;
  if (const std::string path = absl::GetFlag(FLAGS_auth_tokens_file); !path.empty()) {
    auto made = Authenticator::Create(path);
    if (!made.ok()) return Fail(made.status());
    auth = *std::move(made);
  }

  Engine engine(registry->get(), options);
  if (options.state_store != nullptr) {
    absl::StatusOr<RecoveryReport> recovered = engine.Recover();
    if (!recovered.ok()) return Fail(recovered.status());
    Log(LogLevel::kInfo, "sessions recovered",
        {{"store", options.state_store->Describe()},
         {"durability", std::string(DurabilityName(options.durability))},
         {"records", absl::StrCat(recovered->records)},
         {"recovered", absl::StrCat(recovered->recovered)},
         {"expired", absl::StrCat(recovered->expired)},
         {"other_model", absl::StrCat(recovered->other_model)},
         {"corrupt", absl::StrCat(recovered->corrupt)},
         {"no_room", absl::StrCat(recovered->no_room)},
         {"seconds", absl::StrFormat("%.3f", recovered->seconds)}});
    for (const std::string& p : recovered->problems) {
      Log(LogLevel::kWarn, "session record kept but not loaded", {{"record", p}});
    }
  }
  if (const int metrics_port = absl::GetFlag(FLAGS_metrics_port); metrics_port != 0) {
    std::string host = absl::GetFlag(FLAGS_metrics_host);
    if (host.empty()) {
      // The metrics endpoint is plaintext and unauthenticated: once the gRPC port is protected,
      // it stays on this machine unless the operator says otherwise.
      host = tls.enabled() || auth != nullptr ? "127.0.0.1" : absl::GetFlag(FLAGS_host);
    } else if ((tls.enabled() || auth != nullptr) && host != "127.0.0.1" && host != "::1" &&
               host != "localhost") {
      Log(LogLevel::kWarn, "metrics endpoint is plaintext without authentication",
          {{"metrics_host", host}});
    }
    auto bound = metrics_registry->Serve(host, metrics_port, [&] { metrics.Collect(engine); });
    if (!bound.ok()) return Fail(bound.status());
    Log(LogLevel::kInfo, "metrics",
        {{"address", absl::StrCat(host, ":", *bound, "/metrics")},
         {"exporter", metrics_registry->implementation()}});
  }

  TenantStreams tenant_streams(absl::GetFlag(FLAGS_max_streams_per_tenant));
  CallEnv env;
  env.engine = &engine;
  env.metrics = &metrics;
  env.auth = auth.get();
  env.streams = &tenant_streams;
  DrainRegistry drain_registry;
  env.drain = &drain_registry;
  env.access_log = absl::GetFlag(FLAGS_access_log);
  env.default_mca = default_mca;
  std::atomic<int64_t> active_calls{0};
  env.active_calls = &active_calls;
  AarenService service(&env);
  std::atomic<bool> v2_ready{true};
  v2::V2Env v2_env;
  v2_env.env = &env;
  v2_env.stats = &v2_stats;
  v2_env.server_version = AAREN_VERSION;
  v2_env.idle_ttl_s = options.store.default_idle_ttl_s;
  v2_env.limits =
      v2::ParseLimits{default_mca, options.max_sequence_tokens, options.max_reply_bytes};
  int64_t widest_row = 1;
  for (const ServedModel* m : (*registry)->models()) {
    widest_row = std::max<int64_t>(widest_row, m->config().n_features);
  }
  v2_env.json_elements = v2::JsonElementLimit(options.max_sequence_tokens, widest_row);
  v2_env.ready = &v2_ready;
  v2::V2GrpcService v2_service(&v2_env);
  EchoService echo;
  const bool enable_echo = absl::GetFlag(FLAGS_enable_echo);
  grpc::EnableDefaultHealthCheckService(true);
  const bool reflection = absl::GetFlag(FLAGS_reflection);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  // Reflection behind the token check (or off); every unknown method: UNIMPLEMENTED naming it.
  std::vector<std::unique_ptr<grpc::Service>> stand_ins;
  stand_ins.push_back(std::make_unique<v1::Aaren::Service>());
  stand_ins.push_back(std::make_unique<inference::GRPCInferenceService::Service>());
  if (enable_echo) stand_ins.push_back(std::make_unique<v1::BenchEcho::Service>());
  std::unique_ptr<ReflectionGate> gate =
      ReflectionGate::Create(reflection ? auth.get() : nullptr, std::move(stand_ins));
  grpc::ServerBuilder builder;
  if (!reflection || auth != nullptr) builder.SetOption(std::make_unique<WithoutReflection>());
  const std::string address =
      absl::StrCat(absl::GetFlag(FLAGS_host), ":", absl::GetFlag(FLAGS_port));
  int port = 0;
  builder.AddListeningPort(address, *credentials, &port);
  builder.RegisterService(&service);
  builder.RegisterService(&v2_service);
  if (enable_echo) builder.RegisterService(&echo);
  builder.RegisterCallbackGenericService(gate.get());
  const int max_message = absl::GetFlag(FLAGS_max_message_bytes);
  builder.SetMaxReceiveMessageSize(max_message);
  builder.SetMaxSendMessageSize(max_message);
  const int keepalive_ms =
      static_cast<int>(absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_keepalive_time)));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, keepalive_ms);
  builder.AddChannelArgument(
      GRPC_ARG_KEEPALIVE_TIMEOUT_MS,
      static_cast<int>(absl::ToInt64Milliseconds(absl::GetFlag(FLAGS_keepalive_timeout))));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  // Clients may ping as often as every 10 s without being told off (GOAWAY too_many_pings).
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    return Fail(absl::UnavailableError(absl::StrCat("cannot listen on ", address)));
  }
  grpc::HealthCheckServiceInterface* health = server->GetHealthCheckService();
  health->SetServingStatus(true);
  health->SetServingStatus("aaren.v1.Aaren", true);
  Log(LogLevel::kInfo, "serving",
      {{"address", absl::StrCat(absl::GetFlag(FLAGS_host), ":", port)},
       {"models", absl::StrCat((*registry)->models().size())},
       {"device", choice->device},
       {"tls", !tls.enabled()               ? "off"
               : tls.client_ca_file.empty() ? "on"
                                            : "mutual"},
       {"auth", auth != nullptr ? "bearer tokens" : "off"},
       {"reflection", !reflection       ? "off"
                      : auth != nullptr ? "with a token"
                                        : "on"},
       {"max_sessions", absl::StrCat(options.store.pool_sessions)},
       {"max_batch_tokens", absl::StrCat(options.max_batch_tokens)}});
  // The REST API, before the port file says the server is up.
  std::unique_ptr<v2::V2HttpServer> http;
  if (const int http_port = absl::GetFlag(FLAGS_http_port); http_port != 0) {
    v2::HttpOptions http_options;
    http_options.host = absl::GetFlag(FLAGS_host);
    http_options.port = http_port;
    http_options.tls = tls;
    http_options.threads = absl::GetFlag(FLAGS_http_threads);
    http_options.max_body_bytes = max_message;
    if (http_options.threads < 1) {
      return Fail(absl::InvalidArgumentError("--http_threads: must be at least 1"));
    }
    auto started = v2::V2HttpServer::Start(&v2_env, http_options);
    if (!started.ok()) return Fail(started.status());
    http = *std::move(started);
    Log(LogLevel::kInfo, "REST",
        {{"address", absl::StrCat(http_options.host, ":", http->port())},
         {"protocol", tls.enabled() ? "https" : "http"},
         {"threads", absl::StrCat(http_options.threads)}});
  }
  if (const std::string path = absl::GetFlag(FLAGS_port_file); !path.empty()) {
    // Written whole under a temporary name, then renamed: a reader never sees a partial file.
    const std::string tmp = path + ".tmp";
    std::ofstream(tmp) << port << "\n";
    std::filesystem::rename(tmp, path);
  }

  // SIGTERM/SIGINT/SIGHUP/SIGUSR1 are blocked in every thread (see main) and taken here: SIGHUP
  // re-reads the tokens file, SIGUSR1 backs the store up, the others stop the server.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGUSR1);
  int signal_number = 0;
  while (true) {
    sigwait(&signals, &signal_number);
    if (signal_number == SIGUSR1) {
      BackUp(options.state_store, absl::GetFlag(FLAGS_backup_dir));
      continue;
    }
    if (signal_number != SIGHUP) break;
    if (auth == nullptr) {
      Log(LogLevel::kInfo, "SIGHUP: nothing to reload (no --auth_tokens_file)");
      continue;
    }
    absl::StatusOr<size_t> tokens = auth->Reload();
    if (tokens.ok()) {
      Log(LogLevel::kInfo, "tokens reloaded",
          {{"file", auth->path()}, {"tokens", absl::StrCat(*tokens)}});
    } else {
      Log(LogLevel::kError, "tokens reload failed; the previous tokens stay in force",
          {{"error", std::string(tokens.status().message())}});
    }
  }
  const absl::Duration drain = absl::GetFlag(FLAGS_drain_timeout);
  Log(LogLevel::kInfo, "draining",
      {{"signal", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"},
       {"timeout", absl::FormatDuration(drain)}});
  health->SetServingStatus(false);
  v2_ready.store(false);
  health->SetServingStatus("aaren.v1.Aaren", false);
  // Open Streams end after answering what they took: their clients reconnect elsewhere now
  // rather than being cut at the deadline.
  drain_registry.DrainAll();
  if (http != nullptr) http->StopAccepting();  // REST: no new connections during the drain
  // gRPC's Shutdown waits for the deadline or for every connection to go away, and an idle
  // client keeps its connection for seconds after the GOAWAY. So the drain waits only for the
  // calls in flight (of aaren.v1 and the other protocols; health and reflection are not waited
  // for), then closes every connection at once.
  const auto deadline = std::chrono::system_clock::now() + absl::ToChronoNanoseconds(drain);
  std::thread shutdown([&] { server->Shutdown(deadline); });
  do {  // at least once: Shutdown has stopped new calls by the first check
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  } while (active_calls.load(std::memory_order_acquire) > 0 &&
           std::chrono::system_clock::now() < deadline);
  grpc_server_cancel_all_calls(server->c_server());
  shutdown.join();
  http.reset();  // waits for the REST connections still open (each ends after its request)
  engine.Shutdown();
  // Exit 1 when the drain could not write every change (a supervisor sees a failed stop rather
  // than a clean one); 0 otherwise.
  int exit_status = 0;
  if (absl::Status st = engine.UnwrittenChanges(); !st.ok()) {
    Log(LogLevel::kError, "drain incomplete: changes were lost",
        {{"error", std::string(st.message())}});
    exit_status = 1;
  }
  metrics_registry.reset();  // stops /metrics before the engine it reads goes away
  Log(LogLevel::kInfo, "stopped");
  return exit_status;
}

}  // namespace
}  // namespace aaren

int main(int argc, char** argv) {
  // OpenMP workers must sleep between Forward calls rather than spin: gRPC's threads need the
  // cores in between (measured: 70% of the server's CPU spinning in libgomp under 256 streams).
  // libgomp reads its environment when it is loaded, before main, so the variable is set and
  // the binary re-executed once. A value the user set wins.
  if (getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
    // The binary's own path rather than /proc/self/exe, whose name "exe" would become the
    // process name (ps, top, /proc/PID/comm).
    char self[4096];
    const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n > 0) {
      self[n] = '\0';
      execv(self, argv);
    }
    // No /proc, or execv failed: carry on with the default policy.
  }
  // Sessions are small, long-lived allocations made from whichever gRPC thread created them;
  // with glibc's default of 8 malloc arenas per core they scatter over many half-empty arenas
  // (measured: 1.70x the state bytes per idle session vs 1.54x with one arena). Two arenas keep
  // them dense while leaving gRPC's threads some concurrency.
  mallopt(M_ARENA_MAX, 2);
  // Debian builds Abseil without NDEBUG, so absl::Mutex keeps a lock-order graph on every Lock
  // (GraphCycles: ~1% of the server's CPU when streaming). That is a debugging aid; the unit tests,
  // which never run this main, keep it on.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  // Block the stop signals before any thread starts, so that only sigwait() in Run sees them.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGHUP);
  sigaddset(&signals, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  // A client that goes away mid-reply must not kill the server: OpenSSL writes to the REST
  // port's sockets with write(), which raises SIGPIPE on a closed connection (gRPC's own
  // sockets use MSG_NOSIGNAL). The write then fails with EPIPE instead.
  signal(SIGPIPE, SIG_IGN);

  absl::SetProgramUsageMessage(
      "Serves Aaren models over gRPC.\n"
      "  aaren-server [--model_dir DIR ...] [--port 50051] [flags]\n"
      "With no flags: the bundled demo models on 0.0.0.0:50051.");
  std::string merged;
  std::vector<char*> args = aaren::MergeRepeatedModelDirs(argc, argv, merged);
  absl::ParseCommandLine(static_cast<int>(args.size()), args.data());
  if (absl::Status st =
          aaren::InitLogging(absl::GetFlag(FLAGS_log_level), absl::GetFlag(FLAGS_log_format));
      !st.ok()) {
    std::fprintf(stderr, "aaren-server: %s\n", std::string(st.message()).c_str());
    return 2;
  }
  return aaren::Run();
}

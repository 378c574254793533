# SPDX-License-Identifier: Apache-2.0
# Sourced by the bench scripts that run one aaren-server on loopback. Needs $build (the build
# directory), $out (where the port file and server.log go) and $threads (backend threads);
# $server_bin, when set, is the aaren-server binary to start (default $build/server/aaren-server).
#   start_server FLAGS...  starts it on a free port (gRPC, metrics and HTTP ports all chosen by
#                          the kernel) with FLAGS appended (a later flag wins), waits until it
#                          has written its port, and sets server_pid and target; exits with the
#                          server's log if it does not start within 60 s.
#   stop_server            SIGTERM, then waits for it to drain and exit.
# An EXIT trap stops a server the script left running.

start_server() {
  rm -f "$out/port"
  "${server_bin:-$build/server/aaren-server}" --host 127.0.0.1 --port 0 --port_file "$out/port" \
    --threads "$threads" --metrics_port 0 --http_port 0 --log_level warn "$@" \
    2> "$out/server.log" &
  server_pid=$!
  for _ in $(seq 600); do [ -s "$out/port" ] && break; sleep 0.1; done
  [ -s "$out/port" ] || { echo "aaren-server did not start:" >&2; cat "$out/server.log" >&2; exit 1; }
  target="127.0.0.1:$(cat "$out/port")"
}

stop_server() { kill -TERM "$server_pid"; wait "$server_pid"; }

trap 'kill -TERM "${server_pid:-0}" 2>/dev/null || true' EXIT

// SPDX-License-Identifier: Apache-2.0
// RunUnaryBatch: many calls of one unary Aaren RPC kept in flight through gRPC's callback API,
// with responses handed back in index order on the calling thread. The engine behind
// AarenClient::ScoreMany / CreateSessionMany / DeleteSessionMany (whose comment in
// client/aaren_client.h is the contract); use those unless a new RPC needs the same treatment.
#ifndef AAREN_CLIENT_UNARY_BATCH_H_
#define AAREN_CLIENT_UNARY_BATCH_H_

#include <grpcpp/client_context.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <utility>
#include <vector>

#include "aaren/v1/aaren.grpc.pb.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/aaren_client.h"
#include "client/grpc_status.h"
#include "client/session_routing.h"

namespace aaren::client {

// A callback-API unary method of the Aaren stub, e.g. &v1::Aaren::StubInterface::
// async_interface::Score (the std::function overload is picked by this type).
template <typename Request, typename Response>
using AsyncUnaryMethod = void (v1::Aaren::StubInterface::async_interface::*)(
    grpc::ClientContext*, const Request*, Response*, std::function<void(grpc::Status)>);

template <typename Request, typename Response>
absl::Status RunUnaryBatch(AarenClient& client, AsyncUnaryMethod<Request, Response> method,
                           size_t count, int max_in_flight,
                           absl::FunctionRef<Request(size_t)> make_request,
                           absl::FunctionRef<absl::Status(size_t, Response&)> on_response,
                           std::vector<int64_t>* latencies_ns) {
  using Clock = std::chrono::steady_clock;
  // Owned by its completion callback, which deletes it.
  struct Call {
    grpc::ClientContext context;
    Request request;
    Response response;
    Clock::time_point start;
  };
  // Shared with the callbacks; outlives them because this function returns only after every
  // started call has completed.
  std::mutex mu;
  std::condition_variable cv;
  std::map<size_t, absl::StatusOr<Response>> completed;  // guarded by mu

  const size_t window = static_cast<size_t>(std::max(1, max_in_flight));
  absl::Status first_error;
  size_t started = 0;
  for (size_t next = 0; next < started || (first_error.ok() && next < count);) {
    if (first_error.ok() && started < count && started < next + window) {
      auto* call = new Call;
      call->request = make_request(started);
      client.PrepareUnaryContext(call->context, SessionIdOf(call->request));
      call->start = Clock::now();
      const size_t index = started++;
      (client.stub().async()->*method)(
          &call->context, &call->request, &call->response,
          [call, index, latencies_ns, &mu, &cv, &completed](grpc::Status status) {
            const int64_t ns =
                std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - call->start)
                    .count();
            absl::StatusOr<Response> result =
                status.ok() ? absl::StatusOr<Response>(std::move(call->response))
                            : absl::StatusOr<Response>(ToAbslStatus(status));
            delete call;
            std::lock_guard<std::mutex> lock(mu);
            if (latencies_ns != nullptr) latencies_ns->push_back(ns);
            completed.emplace(index, std::move(result));
            cv.notify_one();
          });
      continue;
    }
    // The window is full (or nothing is left to start): wait for call `next`.
    absl::StatusOr<Response> result;
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return completed.count(next) > 0; });
      auto it = completed.find(next);
      result = std::move(it->second);
      completed.erase(it);
    }
    if (first_error.ok()) first_error = result.ok() ? on_response(next, *result) : result.status();
    ++next;
  }
  return first_error;
}

}  // namespace aaren::client

#endif  // AAREN_CLIENT_UNARY_BATCH_H_

// SPDX-License-Identifier: Apache-2.0
// Tests of client/grpc_status.h: every canonical code keeps its number and its message.
#include "client/grpc_status.h"

#include <grpcpp/support/status.h>

#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "absl/status/status.h"

namespace aaren::client {
namespace {

TEST(GrpcStatusTest, OkIsOkStatus) {
  EXPECT_EQ(ToAbslStatus(grpc::Status::OK), absl::OkStatus());
  EXPECT_TRUE(ToAbslStatus(grpc::Status()).ok());
}

TEST(GrpcStatusTest, EveryCanonicalCodeAndMessageSurvive) {
  const std::vector<std::pair<grpc::StatusCode, absl::StatusCode>> codes = {
      {grpc::StatusCode::CANCELLED, absl::StatusCode::kCancelled},
      {grpc::StatusCode::UNKNOWN, absl::StatusCode::kUnknown},
      {grpc::StatusCode::INVALID_ARGUMENT, absl::StatusCode::kInvalidArgument},
      {grpc::StatusCode::DEADLINE_EXCEEDED, absl::StatusCode::kDeadlineExceeded},
      {grpc::StatusCode::NOT_FOUND, absl::StatusCode::kNotFound},
      {grpc::StatusCode::ALREADY_EXISTS, absl::StatusCode::kAlreadyExists},
      {grpc::StatusCode::PERMISSION_DENIED, absl::StatusCode::kPermissionDenied},
      {grpc::StatusCode::RESOURCE_EXHAUSTED, absl::StatusCode::kResourceExhausted},
      {grpc::StatusCode::FAILED_PRECONDITION, absl::StatusCode::kFailedPrecondition},
      {grpc::StatusCode::ABORTED, absl::StatusCode::kAborted},
      {grpc::StatusCode::OUT_OF_RANGE, absl::StatusCode::kOutOfRange},
      {grpc::StatusCode::UNIMPLEMENTED, absl::StatusCode::kUnimplemented},
      {grpc::StatusCode::INTERNAL, absl::StatusCode::kInternal},
      {grpc::StatusCode::UNAVAILABLE, absl::StatusCode::kUnavailable},
      {grpc::StatusCode::DATA_LOSS, absl::StatusCode::kDataLoss},
      {grpc::StatusCode::UNAUTHENTICATED, absl::StatusCode::kUnauthenticated},
  };
  ASSERT_EQ(codes.size(), 16u);  // all canonical codes but OK
  for (const auto& [grpc_code, absl_code] : codes) {
    const std::string message = "session 'abc': position " + std::to_string(grpc_code);
    const absl::Status status = ToAbslStatus(grpc::Status(grpc_code, message));
    EXPECT_EQ(status.code(), absl_code) << "grpc code " << grpc_code;
    EXPECT_EQ(status.message(), message);
  }
}

TEST(GrpcStatusTest, EmptyAndNonAsciiMessagesAreKept) {
  EXPECT_EQ(ToAbslStatus(grpc::Status(grpc::StatusCode::ABORTED, "")), absl::AbortedError(""));
  const std::string utf8 = "text: '\xc3\xbc' at byte 3 is not in the vocabulary\n(line 2)";
  EXPECT_EQ(ToAbslStatus(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, utf8)),
            absl::InvalidArgumentError(utf8));
}

TEST(GrpcStatusTest, OutOfRangeCodesBecomeUnknownWithTheirMessage) {
  for (int code : {-1, 17, 42, 1000}) {
    const absl::Status status =
        ToAbslStatus(grpc::Status(static_cast<grpc::StatusCode>(code), "from a newer peer"));
    EXPECT_EQ(status.code(), absl::StatusCode::kUnknown) << "code " << code;
    EXPECT_EQ(status.message(), "from a newer peer");
  }
}

TEST(GrpcStatusTest, ErrorDetailsAreNotPartOfTheMessage) {
  const absl::Status status = ToAbslStatus(
      grpc::Status(grpc::StatusCode::UNAVAILABLE, "draining", /*error_details=*/"\x08\x01"));
  EXPECT_EQ(status, absl::UnavailableError("draining"));
}

}  // namespace
}  // namespace aaren::client

// SPDX-License-Identifier: Apache-2.0
// cuBLAS is loaded at run time; this needs the CUDA toolkit's libraries, not a GPU, so it runs in
// CI: every entry point resolves and statuses are named.
#include "kernels/cublas_library.h"

#include <gtest/gtest.h>

namespace aaren::cuda {
namespace {

TEST(CublasLibraryTest, LoadsEveryEntryPointOnce) {
  auto lib = LoadCublas();
  ASSERT_TRUE(lib.ok()) << lib.status();
  EXPECT_NE((*lib)->create, nullptr);
  EXPECT_NE((*lib)->destroy, nullptr);
  EXPECT_NE((*lib)->set_stream, nullptr);
  EXPECT_NE((*lib)->set_math_mode, nullptr);
  EXPECT_NE((*lib)->sgemm, nullptr);
  auto again = LoadCublas();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, *lib);
}

TEST(CublasLibraryTest, StatusesAreNamed) {
  auto lib = LoadCublas();
  ASSERT_TRUE(lib.ok()) << lib.status();
  EXPECT_TRUE(CublasStatus(**lib, CUBLAS_STATUS_SUCCESS, "x").ok());
  const absl::Status oom = CublasStatus(**lib, CUBLAS_STATUS_ALLOC_FAILED, "cublasCreate");
  EXPECT_EQ(oom.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(oom.message().find("cublasCreate: CUBLAS_STATUS_ALLOC_FAILED"), std::string::npos)
      << oom;
  EXPECT_EQ(CublasStatus(**lib, CUBLAS_STATUS_EXECUTION_FAILED, "x").code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace aaren::cuda

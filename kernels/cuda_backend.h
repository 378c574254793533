// SPDX-License-Identifier: Apache-2.0
// CudaBackend: the Backend interface (core/backend.h) on one NVIDIA GPU.
//
// Weights are copied to the device once, at Create. A Forward uploads its inputs and tables in one
// host-to-device copy, then runs every layer over all rows of the batch on one CUDA stream:
// cuBLAS SGEMM (FP32, no TF32) for the projections, FFN and head; fused kernels for the input rows
// (+ position code), LayerNorm (+ the previous projection's bias), bias + GELU and row gathers
// (kernels/layer_kernels.h); the scan kernel for spans longer than one token and the step kernel
// for one-token spans (kernels/attention_kernels.h), both reading and writing each span's state in
// place in device memory. The only host synchronisation is the final device-to-host copy of the
// wanted outputs, the per-span finiteness flags and MCA counts. Only rows whose outputs are wanted
// run the last layer's residual, the final LayerNorm and the head.
//
// Monte-Carlo Attention (Span::mca): between each layer's value GEMM and its attention kernels,
// the MCA kernels (kernels/mca_kernels.h) overwrite the sampled rows' values with the CPU
// backend's estimates (same draws, same order of summation); the MCA tables are uploaded by the
// first Forward that needs them. Span::mca_counts is filled on success.
//
// States: Span::state must be device memory from state_memory() (kRunnable), e.g. a slot of the
// engine's GPU state pool; kStaging memory is page-locked host memory, so evicting a state to the
// host tier and resuming it are asynchronous copies on the backend's stream.
//
// Errors: every CUDA and cuBLAS call is checked; failures are absl::Status (RESOURCE_EXHAUSTED
// when device memory runs out, INTERNAL otherwise), never a crash. All or nothing as the
// interface requires: states are saved on the device before the run and restored on failure.
//
// Thread-safety: Forward and the state-memory calls may come from any thread; they are serialised
// per backend (one stream). Host-only header: no CUDA types.
#ifndef AAREN_KERNELS_CUDA_BACKEND_H_
#define AAREN_KERNELS_CUDA_BACKEND_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/backend.h"
#include "core/model.h"
#include "core/state_memory.h"

namespace aaren::cuda {

struct CudaBackendOptions {
  int device = 0;  // CUDA device ordinal
};

class CudaBackend final : public Backend {
 public:
  // Uploads the model's weights to device `options.device`. UNAVAILABLE when there is no such
  // device, RESOURCE_EXHAUSTED when the weights do not fit, UNIMPLEMENTED when d_head exceeds
  // kMaxAttentionHeadDim (1024).
  static absl::StatusOr<std::unique_ptr<CudaBackend>> Create(std::shared_ptr<const Model> model,
                                                             CudaBackendOptions options = {});
  ~CudaBackend() override;

  const Model& model() const override;
  absl::string_view name() const override { return "cuda"; }
  StateMemory& state_memory() override;
  absl::Status Forward(absl::Span<const Span> spans) override;

  // "NVIDIA H100 80GB HBM3 (device 0, sm_90)", for logs.
  const std::string& device_description() const;

  struct Impl;  // CUDA resources (kernels/cuda_backend.cc)

 private:
  explicit CudaBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace aaren::cuda

#endif  // AAREN_KERNELS_CUDA_BACKEND_H_

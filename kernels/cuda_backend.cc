// SPDX-License-Identifier: Apache-2.0
#include "kernels/cuda_backend.h"
#include "kernels/cuda_backend_impl.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/mca.h"
#include "core/score_weights.h"
#include "core/status_macros.h"
#include "kernels/attention_kernels.h"
#include "kernels/cublas_library.h"
#include "kernels/cuda_check.h"
#include "kernels/layer_kernels.h"
#include "kernels/mca_kernels.h"

namespace aaren::cuda {
namespace {

// Rows of the FFN's hidden activations ([rows, d_ff]) held at once: bounds a Forward's device
// memory for very long batches.
constexpr int64_t kFfnBlockRows = 32768;
// Device memory the stream-ordered allocator keeps cached between Forwards.
constexpr uint64_t kPoolKeepBytes = uint64_t{1} << 30;

// y[rows, n] (+)= x[rows, k] W^T, W row-major [n, k] (PyTorch nn.Linear); x and y row-major with
// leading dimensions k and n. In cuBLAS' column-major terms: y^T = op(W) x^T with op = transpose.
absl::Status Gemm(const CublasLibrary& blas, cublasHandle_t handle, const float* x, int64_t rows,
                  int k, const float* w, int n, float* y, bool accumulate) {
  if (rows == 0) return absl::OkStatus();
  if (rows > INT_MAX) {
    return absl::InvalidArgumentError(
        absl::StrCat("batch of ", rows, " rows exceeds cuBLAS' limit"));
  }
  const float alpha = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  return CublasStatus(blas,
                      blas.sgemm(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, static_cast<int>(rows), k,
                                 &alpha, w, k, x, k, &beta, y, n),
                      "cublasSgemm");
}

// The device allocations of one Forward: stream-ordered (cudaMallocAsync from the device's
// memory pool, which keeps freed memory for reuse), freed in stream order when this goes away.
class ForwardBuffers {
 public:
  explicit ForwardBuffers(cudaStream_t stream) : stream_(stream) {}
  ~ForwardBuffers() {
    for (void* p : blocks_) cudaFreeAsync(p, stream_);
  }
  ForwardBuffers(const ForwardBuffers&) = delete;
  ForwardBuffers& operator=(const ForwardBuffers&) = delete;

  template <typename T>
  absl::StatusOr<T*> Get(int64_t count, absl::string_view what) {
    void* p = nullptr;
    const size_t bytes = sizeof(T) * static_cast<size_t>(std::max<int64_t>(count, 1));
    const cudaError_t err = cudaMallocAsync(&p, bytes, stream_);
    if (err != cudaSuccess) {
      cudaGetLastError();  // allocation failures are not sticky; clear it
      return CudaStatus(err, absl::StrCat("device memory for ", what, " (", bytes, " bytes)"));
    }
    blocks_.push_back(p);
    return static_cast<T*>(p);
  }

 private:
  cudaStream_t stream_;
  std::vector<void*> blocks_;
};

// Host arrays packed back to back (16-byte aligned) for one host-to-device copy.
class TablePacker {
 public:
  template <typename T>
  size_t Add(const T* data, size_t n) {
    const size_t offset = (bytes_.size() + 15) / 16 * 16;
    bytes_.resize(offset + n * sizeof(T));
    if (n > 0) std::memcpy(bytes_.data() + offset, data, n * sizeof(T));
    return offset;
  }
  template <typename T>
  size_t Add(const std::vector<T>& v) {
    return Add(v.data(), v.size());
  }
  const std::vector<char>& bytes() const { return bytes_; }

 private:
  std::vector<char> bytes_;
};

}  // namespace

CudaBackend::Impl::~Impl() {
  cudaSetDevice(device);
  if (stream != nullptr) cudaStreamSynchronize(stream);
  for (void* p : weight_blocks) cudaFree(p);
  if (pinned != nullptr) cudaFreeHost(pinned);
  if (cublas != nullptr) blas->destroy(cublas);
  if (stream != nullptr) cudaStreamDestroy(stream);
}

template <typename T>
absl::StatusOr<const T*> CudaBackend::Impl::UploadWeights(const T* host, size_t n,
                                                          absl::string_view what) {
  void* p = nullptr;
  AAREN_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)),
                             absl::StrCat("device memory for ", what));
  weight_blocks.push_back(p);
  // On the backend's stream, like every later use (a synchronous cudaMemcpy runs on the legacy
  // stream, which the non-blocking stream does not wait for); Init synchronises once at its end.
  // From pageable memory the call returns once `host` has been staged, so it may go away.
  AAREN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(p, host, n * sizeof(T), cudaMemcpyHostToDevice, stream),
      absl::StrCat("upload of ", what));
  return static_cast<const T*>(p);
}

absl::Status CudaBackend::Impl::Init() {
  const ModelConfig& c = model->config();
  int count = 0;
  const cudaError_t count_err = cudaGetDeviceCount(&count);
  if (count_err != cudaSuccess || device < 0 || device >= count) {
    cudaGetLastError();
    return absl::UnavailableError(absl::StrCat(
        "CUDA device ", device, " is not available (", count_err == cudaSuccess ? count : 0,
        " device(s) visible",
        count_err == cudaSuccess ? "" : absl::StrCat(", ", cudaGetErrorString(count_err)), ")"));
  }
  if (c.d_head() > kMaxAttentionHeadDim) {
    return absl::UnimplementedError(absl::StrCat("model '", model->name(), "': d_head ", c.d_head(),
                                                 " exceeds the CUDA kernels' limit of ",
                                                 kMaxAttentionHeadDim));
  }
  AAREN_CUDA_RETURN_IF_ERROR(cudaSetDevice(device), "cudaSetDevice");
  cudaDeviceProp prop{};
  AAREN_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  description = absl::StrCat(prop.name, " (device ", device, ", sm_", prop.major, prop.minor, ")");
  AAREN_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking),
                             "cudaStreamCreate");
  ASSIGN_OR_RETURN(blas, LoadCublas());
  RETURN_IF_ERROR(CublasStatus(*blas, blas->create(&cublas), "cublasCreate"));
  RETURN_IF_ERROR(CublasStatus(*blas, blas->set_stream(cublas, stream), "cublasSetStream"));
  // FP32 products (no TF32): the backend must agree with the CPU one to 1e-4.
  RETURN_IF_ERROR(
      CublasStatus(*blas, blas->set_math_mode(cublas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode"));
  // Keep up to kPoolKeepBytes of memory freed by a Forward in the pool for the next one (a large
  // batch's excess goes back to the device at the next synchronisation).
  cudaMemPool_t pool;
  AAREN_CUDA_RETURN_IF_ERROR(cudaDeviceGetDefaultMemPool(&pool, device),
                             "cudaDeviceGetDefaultMemPool");
  uint64_t threshold = kPoolKeepBytes;
  AAREN_CUDA_RETURN_IF_ERROR(
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold),
      "cudaMemPoolSetAttribute");

  auto upload = [&](const Tensor& t, absl::string_view name) {
    return UploadWeights(t.ptr(), static_cast<size_t>(t.num_elements()), name);
  };
  const int64_t d = c.d_model;
  if (c.input_kind == InputKind::kTokens) {
    ASSIGN_OR_RETURN(embed, upload(*model->embed_weight(), "embed.weight"));
  } else {
    ASSIGN_OR_RETURN(input_weight, upload(*model->input_weight(), "input.weight"));
    ASSIGN_OR_RETURN(input_bias, upload(*model->input_bias(), "input.bias"));
  }
  fused_width = static_cast<int>((d + c.n_heads + 3) / 4 * 4);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& w = model->layer(l);
    const FoldedScoreWeights folded = FoldQueryKey(*model, l);
    std::vector<float> fused_w(static_cast<size_t>(fused_width * d), 0.0f);
    std::vector<float> fused_b(static_cast<size_t>(fused_width), 0.0f);
    std::copy_n(w.value_weight->ptr(), d * d, fused_w.begin());
    std::copy(folded.matrix.begin(), folded.matrix.end(), fused_w.begin() + d * d);
    std::copy_n(w.value_bias->ptr(), d, fused_b.begin());
    std::copy(folded.bias.begin(), folded.bias.end(), fused_b.begin() + d);
    const std::string p = absl::StrCat("layers.", l, ".");
    Layer dl{};
    ASSIGN_OR_RETURN(dl.norm1_weight, upload(*w.norm1_weight, p + "norm1.weight"));
    ASSIGN_OR_RETURN(dl.norm1_bias, upload(*w.norm1_bias, p + "norm1.bias"));
    ASSIGN_OR_RETURN(dl.fused_weight,
                     UploadWeights(fused_w.data(), fused_w.size(), p + "attn (fused)"));
    ASSIGN_OR_RETURN(dl.fused_bias, UploadWeights(fused_b.data(), fused_b.size(), p + "attn bias"));
    ASSIGN_OR_RETURN(dl.out_weight, upload(*w.out_weight, p + "attn.out.weight"));
    ASSIGN_OR_RETURN(dl.out_bias, upload(*w.out_bias, p + "attn.out.bias"));
    ASSIGN_OR_RETURN(dl.norm2_weight, upload(*w.norm2_weight, p + "norm2.weight"));
    ASSIGN_OR_RETURN(dl.norm2_bias, upload(*w.norm2_bias, p + "norm2.bias"));
    ASSIGN_OR_RETURN(dl.up_weight, upload(*w.ffn_up_weight, p + "ffn.up.weight"));
    ASSIGN_OR_RETURN(dl.up_bias, upload(*w.ffn_up_bias, p + "ffn.up.bias"));
    ASSIGN_OR_RETURN(dl.down_weight, upload(*w.ffn_down_weight, p + "ffn.down.weight"));
    ASSIGN_OR_RETURN(dl.down_bias, upload(*w.ffn_down_bias, p + "ffn.down.bias"));
    layers.push_back(dl);
  }
  ASSIGN_OR_RETURN(norm_f_weight, upload(model->norm_f_weight(), "norm_f.weight"));
  ASSIGN_OR_RETURN(norm_f_bias, upload(model->norm_f_bias(), "norm_f.bias"));
  ASSIGN_OR_RETURN(head_weight, upload(model->head_weight(), "head.weight"));
  ASSIGN_OR_RETURN(head_bias, upload(model->head_bias(), "head.bias"));
  std::vector<double> freq(static_cast<size_t>((d + 1) / 2));
  for (size_t i = 0; i < freq.size(); ++i) {
    freq[i] = std::pow(10000.0, -static_cast<double>(2 * i) / static_cast<double>(d));
  }
  ASSIGN_OR_RETURN(frequencies, UploadWeights(freq.data(), freq.size(), "position frequencies"));
  // Every weight is on the device before the first Forward or state copy.
  AAREN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream), "upload of the weights");
  memory = MakeCudaStateMemory(this);
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::ReservePinned(size_t bytes) {
  if (bytes <= pinned_bytes) return absl::OkStatus();
  const size_t want = std::max(bytes, pinned_bytes * 2);  // grow geometrically
  if (pinned != nullptr) {
    // Nothing on the stream may still read the old staging memory.
    AAREN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream), "staging memory");
    cudaFreeHost(pinned);
  }
  pinned = nullptr;
  pinned_bytes = 0;
  const cudaError_t err = cudaHostAlloc(&pinned, want, cudaHostAllocDefault);
  if (err != cudaSuccess) {
    cudaGetLastError();
    pinned = nullptr;
    return CudaStatus(err, absl::StrCat("page-locked staging memory (", want, " bytes)"));
  }
  pinned_bytes = want;
  return absl::OkStatus();
}

// Builds the model's McaTables on the host and uploads them, once (the caller holds `mu`). On
// failure nothing is kept, and the next Forward with an MCA span tries again.
absl::Status CudaBackend::Impl::UploadMcaTables() {
  if (mca.prob != nullptr) return absl::OkStatus();
  const McaTables tables(*model);
  std::vector<void*> blocks;
  auto upload = [&](const auto& host, absl::string_view what, auto** out) -> absl::Status {
    using T = typename std::decay_t<decltype(host)>::value_type;
    void* p = nullptr;
    const size_t bytes = std::max<size_t>(host.size(), 1) * sizeof(T);
    const cudaError_t err = cudaMalloc(&p, bytes);
    if (err != cudaSuccess) {
      cudaGetLastError();
      return CudaStatus(err,
                        absl::StrCat("device memory for the MCA ", what, " (", bytes, " bytes)"));
    }
    blocks.push_back(p);
    AAREN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, stream),
        absl::StrCat("upload of the MCA ", what));
    *out = static_cast<const T*>(p);
    return absl::OkStatus();
  };
  McaDeviceTables d;
  absl::Status st = upload(tables.all_prob(), "alias probabilities", &d.prob);
  if (st.ok()) st = upload(tables.all_alias(), "alias table", &d.alias);
  if (st.ok()) st = upload(tables.all_inv_p(), "inverse probabilities", &d.inv_p);
  if (st.ok()) st = upload(tables.all_columns(), "value columns", &d.columns);
  // The host tables go away on return: wait for the copies (once per backend).
  if (st.ok()) st = CudaStatus(cudaStreamSynchronize(stream), "upload of the MCA tables");
  if (!st.ok()) {
    cudaStreamSynchronize(stream);
    for (void* p : blocks) cudaFree(p);
    return st;
  }
  weight_blocks.insert(weight_blocks.end(), blocks.begin(), blocks.end());
  mca = d;
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::LayerNorm(int64_t rows, float* x, const float* add_bias,
                                          const float* gamma, const float* beta, float* y) {
  LayerNormParams ln;
  ln.rows = rows;
  ln.d = static_cast<int>(model->config().d_model);
  ln.x = x;
  ln.add_bias = add_bias;
  ln.gamma = gamma;
  ln.beta = beta;
  ln.eps = static_cast<float>(model->config().norm_eps);
  ln.y = y;
  AAREN_CUDA_RETURN_IF_ERROR(LaunchLayerNorm(ln, stream), "LayerNorm kernel");
  return absl::OkStatus();
}

// x += W_o attn + b_o (b_o folded into the LayerNorm); x += W_2 gelu(W_1 LN_2(x) + b_1) (b_2 is
// added by the next LayerNorm). `normed` and `hidden` are scratch rows.
absl::Status CudaBackend::Impl::Residual(const Layer& w, float* x, const float* attn, int64_t n,
                                         float* normed, float* hidden) {
  const ModelConfig& c = model->config();
  const int d = static_cast<int>(c.d_model), d_ff = static_cast<int>(c.d_ff);
  RETURN_IF_ERROR(Gemm(*blas, cublas, attn, n, d, w.out_weight, d, x, /*accumulate=*/true));
  RETURN_IF_ERROR(LayerNorm(n, x, w.out_bias, w.norm2_weight, w.norm2_bias, normed));
  for (int64_t r0 = 0; r0 < n; r0 += kFfnBlockRows) {
    const int64_t nb = std::min(kFfnBlockRows, n - r0);
    RETURN_IF_ERROR(Gemm(*blas, cublas, normed + r0 * d, nb, d, w.up_weight, d_ff, hidden, false));
    BiasActivationParams act;
    act.y = hidden;
    act.rows = nb;
    act.cols = d_ff;
    act.bias = w.up_bias;
    act.gelu = true;
    AAREN_CUDA_RETURN_IF_ERROR(LaunchBiasActivation(act, stream), "bias + GELU kernel");
    RETURN_IF_ERROR(Gemm(*blas, cublas, hidden, nb, d_ff, w.down_weight, d, x + r0 * d, true));
  }
  return absl::OkStatus();
}

absl::Status CudaBackend::Impl::Run(absl::Span<const Span> spans, const std::vector<int32_t>& live,
                                    const std::vector<int64_t>& length, int64_t rows) {
  const ModelConfig& c = model->config();
  const int d = static_cast<int>(c.d_model), n_heads = static_cast<int>(c.n_heads);
  const int dh = static_cast<int>(c.d_head()), od = static_cast<int>(c.output_dim);
  const int n_features = static_cast<int>(c.n_features);
  const int64_t state_floats = c.state_floats();
  const int64_t layer_floats = n_heads * (2 + dh);
  const int n_live = static_cast<int>(live.size());
  const bool tokens_input = c.input_kind == InputKind::kTokens;
  const bool sinusoidal = c.position == PositionKind::kSinusoidal;
  const int tile_rows = AttentionScanTileRows(dh);

  // ---- Host tables. ----
  std::vector<float*> states(n_live), step_state, scan_state;
  std::vector<int64_t> step_row, scan_first_row, scan_length, scan_first_tile, out_index, positions;
  std::vector<int32_t> out_state, tokens;
  std::vector<float> features;
  // Spans that sample their value projections: MCA with alpha > 0 (alpha = 0 spends d_model
  // samples everywhere, i.e. the exact product the GEMM computes anyway).
  std::vector<int64_t> mca_first_row, mca_first_mca_row = {0}, mca_position;
  std::vector<float> mca_alpha;
  std::vector<uint64_t> mca_seed;
  std::vector<float*> mca_state;
  std::vector<int32_t> mca_index(n_live, -1);  // live span -> MCA span, or -1
  if (sinusoidal) positions.reserve(rows);
  if (tokens_input)
    tokens.reserve(rows);
  else
    features.reserve(rows * n_features);
  int64_t row = 0, tiles = 0;
  for (int k = 0; k < n_live; ++k) {
    const Span& s = spans[live[k]];
    const int64_t len = length[k];
    states[k] = s.state;
    if (tokens_input) {
      tokens.insert(tokens.end(), s.tokens.begin(), s.tokens.end());
    } else {
      features.insert(features.end(), s.features.begin(), s.features.end());
    }
    if (sinusoidal) {
      for (int64_t j = 0; j < len; ++j) positions.push_back(*s.position + j);
    }
    if (s.mca.enabled && s.mca.alpha > 0.0f) {
      mca_index[k] = static_cast<int32_t>(mca_state.size());
      mca_first_row.push_back(row);
      mca_first_mca_row.push_back(mca_first_mca_row.back() + len);
      mca_position.push_back(*s.position);
      mca_alpha.push_back(s.mca.alpha);
      mca_seed.push_back(s.mca.seed);
      mca_state.push_back(s.state);
    }
    if (len == 1) {
      step_row.push_back(row);
      step_state.push_back(s.state);
    } else {
      scan_first_row.push_back(row);
      scan_length.push_back(len);
      scan_state.push_back(s.state);
      scan_first_tile.push_back(tiles);
      tiles += n_heads * ((len + tile_rows - 1) / tile_rows);
    }
    if (s.output == OutputSelect::kAll || s.output == OutputSelect::kLast) {
      for (int64_t j = s.output == OutputSelect::kAll ? 0 : len - 1; j < len; ++j) {
        out_index.push_back(row + j);
        out_state.push_back(k);
      }
    }
    row += len;
  }
  scan_first_tile.push_back(tiles);
  const int64_t n_out = static_cast<int64_t>(out_index.size());
  const int n_mca = static_cast<int>(mca_state.size());
  const int64_t mca_rows = mca_first_mca_row.back();
  if (scan_state.size() > INT_MAX || step_state.size() > INT_MAX || rows > INT_MAX ||
      tiles > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("batch of ", rows, " tokens in ", n_live,
                                                   " spans exceeds the CUDA backend's limits"));
  }

  TablePacker pack;
  const size_t o_states = pack.Add(states);
  const size_t o_step_row = pack.Add(step_row);
  const size_t o_step_state = pack.Add(step_state);
  const size_t o_scan_first_row = pack.Add(scan_first_row);
  const size_t o_scan_length = pack.Add(scan_length);
  const size_t o_scan_state = pack.Add(scan_state);
  const size_t o_scan_first_tile = pack.Add(scan_first_tile);
  const size_t o_out_index = pack.Add(out_index);
  const size_t o_out_state = pack.Add(out_state);
  const size_t o_positions = pack.Add(positions);
  const size_t o_inputs = tokens_input ? pack.Add(tokens) : pack.Add(features);
  const size_t o_mca_first_row = pack.Add(mca_first_row);
  const size_t o_mca_first_mca_row = pack.Add(mca_first_mca_row);
  const size_t o_mca_position = pack.Add(mca_position);
  const size_t o_mca_alpha = pack.Add(mca_alpha);
  const size_t o_mca_seed = pack.Add(mca_seed);
  const size_t o_mca_state = pack.Add(mca_state);
  const size_t table_bytes = pack.bytes().size();
  const size_t out_offset = (table_bytes + 15) / 16 * 16;
  const size_t flags_offset = out_offset + (static_cast<size_t>(n_out) * od * 4 + 15) / 16 * 16;
  // The finiteness flags [n_live] and the MCA spans' value FLOPs [n_mca] share one buffer, so
  // that they come back in one copy: flags, padded to 16 bytes, then the 64-bit counters.
  const size_t mca_flops_in_results = (static_cast<size_t>(n_live) * 4 + 15) / 16 * 16;
  const size_t results_bytes = mca_flops_in_results + static_cast<size_t>(n_mca) * 8;
  RETURN_IF_ERROR(ReservePinned(flags_offset + results_bytes));
  char* const host = static_cast<char*>(pinned);
  if (n_mca > 0) RETURN_IF_ERROR(UploadMcaTables());

  // ---- Device memory: all of it before the first state is touched. ----
  ForwardBuffers buf(stream);
  const int64_t ffn_rows = std::min(rows, kFfnBlockRows);
  ASSIGN_OR_RETURN(char* d_tables,
                   buf.Get<char>(static_cast<int64_t>(table_bytes), "batch tables"));
  ASSIGN_OR_RETURN(float* x, buf.Get<float>(rows * d, "activations"));
  ASSIGN_OR_RETURN(float* normed, buf.Get<float>(rows * d, "normalised activations"));
  ASSIGN_OR_RETURN(float* sv, buf.Get<float>(rows * fused_width, "values and scores"));
  ASSIGN_OR_RETURN(float* attn, buf.Get<float>(rows * d, "attention outputs"));
  ASSIGN_OR_RETURN(float* hidden, buf.Get<float>(ffn_rows * c.d_ff, "FFN activations"));
  ASSIGN_OR_RETURN(float* saved, buf.Get<float>(n_live * state_floats, "saved states"));
  ASSIGN_OR_RETURN(void* scratch,
                   buf.Get<char>(AttentionScanScratchBytes(tiles, dh), "scan scratch"));
  ASSIGN_OR_RETURN(float* xs, buf.Get<float>(n_out * d, "output rows"));
  ASSIGN_OR_RETURN(float* as, buf.Get<float>(n_out * d, "output rows' attention"));
  ASSIGN_OR_RETURN(float* y, buf.Get<float>(n_out * od, "outputs"));
  ASSIGN_OR_RETURN(char* results, buf.Get<char>(static_cast<int64_t>(results_bytes),
                                                "finiteness flags and MCA counts"));
  int32_t* const flags = reinterpret_cast<int32_t*>(results);
  unsigned long long* const mca_flops =
      reinterpret_cast<unsigned long long*>(results + mca_flops_in_results);
  int32_t* sample_counts = nullptr;
  if (n_mca > 0) {
    ASSIGN_OR_RETURN(sample_counts, buf.Get<int32_t>(mca_rows * n_heads, "MCA sample counts"));
  }
  auto table = [&](size_t offset) { return d_tables + offset; };
  float* const* d_states = reinterpret_cast<float* const*>(table(o_states));

  std::memcpy(host, pack.bytes().data(), table_bytes);
  AAREN_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(d_tables, host, table_bytes, cudaMemcpyHostToDevice, stream),
      "upload of the batch");
  StateCopyParams save;
  save.states = d_states;
  save.saved = saved;
  save.n_states = n_live;
  save.state_floats = state_floats;
  AAREN_CUDA_RETURN_IF_ERROR(LaunchStateCopy(save, stream), "state save kernel");

  McaSpans mca_spans;
  mca_spans.n_spans = n_mca;
  mca_spans.first_row = reinterpret_cast<const int64_t*>(table(o_mca_first_row));
  mca_spans.first_mca_row = reinterpret_cast<const int64_t*>(table(o_mca_first_mca_row));
  mca_spans.position = reinterpret_cast<const int64_t*>(table(o_mca_position));
  mca_spans.alpha = reinterpret_cast<const float*>(table(o_mca_alpha));
  mca_spans.seed = reinterpret_cast<const uint64_t*>(table(o_mca_seed));
  mca_spans.state = reinterpret_cast<float* const*>(table(o_mca_state));

  auto run_layers = [&]() -> absl::Status {
    if (n_mca > 0) {
      AAREN_CUDA_RETURN_IF_ERROR(
          cudaMemsetAsync(mca_flops, 0, static_cast<size_t>(n_mca) * 8, stream),
          "clearing the MCA counts");
    }
    InputRowsParams in;
    in.rows = rows;
    in.d_model = d;
    in.positions = sinusoidal ? reinterpret_cast<const int64_t*>(table(o_positions)) : nullptr;
    in.frequencies = frequencies;
    in.x = x;
    if (tokens_input) {
      in.tokens = reinterpret_cast<const int32_t*>(table(o_inputs));
      in.embed = embed;
    } else {
      RETURN_IF_ERROR(Gemm(*blas, cublas, reinterpret_cast<const float*>(table(o_inputs)), rows,
                           n_features, input_weight, d, x, false));
      in.bias = input_bias;
    }
    AAREN_CUDA_RETURN_IF_ERROR(LaunchInputRows(in, stream), "input rows kernel");

    const int n_layers = static_cast<int>(layers.size());
    for (int l = 0; l < n_layers; ++l) {
      const Layer& w = layers[l];
      RETURN_IF_ERROR(LayerNorm(rows, x, l > 0 ? layers[l - 1].down_bias : nullptr, w.norm1_weight,
                                w.norm1_bias, normed));
      RETURN_IF_ERROR(Gemm(*blas, cublas, normed, rows, d, w.fused_weight, fused_width, sv, false));

      AttentionIo io;
      io.scores = sv + d;
      io.score_stride = fused_width;
      io.score_bias = w.fused_bias + d;
      io.values = sv;
      io.value_stride = fused_width;
      io.value_bias = w.fused_bias;
      io.outputs = attn;
      io.output_stride = d;
      io.n_heads = n_heads;
      io.d_head = dh;
      if (n_mca > 0) {
        // Monte-Carlo Attention: each MCA row's sample count from its importance, then its
        // sampled values in place of the GEMM's exact ones (kernels/mca_kernels.h). Both read
        // this layer's (m, u) of the spans' states before the attention kernels advance them.
        McaSampleCountParams mc;
        mc.spans = mca_spans;
        mc.state_offset = l * layer_floats;
        mc.scores = io.scores;
        mc.score_stride = io.score_stride;
        mc.score_bias = io.score_bias;
        mc.n_heads = n_heads;
        mc.d_head = dh;
        mc.d_model = d;
        mc.sample_counts = sample_counts;
        mc.value_flops = mca_flops;
        AAREN_CUDA_RETURN_IF_ERROR(LaunchMcaSampleCount(mc, stream), "MCA sample-count kernel");
        McaValueParams mv;
        mv.spans = mca_spans;
        mv.mca_rows = mca_rows;
        mv.layer = l;
        mv.prob = mca.prob;
        mv.alias = mca.alias;
        mv.inv_p = mca.inv_p;
        mv.columns = mca.columns;
        mv.x = normed;
        mv.sample_counts = sample_counts;
        mv.values = sv;
        mv.value_stride = fused_width;
        mv.n_heads = n_heads;
        mv.d_head = dh;
        mv.d_model = d;
        AAREN_CUDA_RETURN_IF_ERROR(LaunchMcaValues(mv, stream), "MCA value kernel");
      }
      if (!step_state.empty()) {
        AttentionStepParams st;
        st.io = io;
        st.n_spans = static_cast<int>(step_state.size());
        st.span_row = reinterpret_cast<const int64_t*>(table(o_step_row));
        st.span_state = reinterpret_cast<float* const*>(table(o_step_state));
        st.state_offset = l * layer_floats;
        AAREN_CUDA_RETURN_IF_ERROR(LaunchAttentionStep(st, stream), "attention step kernel");
      }
      if (tiles > 0) {
        AttentionScanParams sc;
        sc.io = io;
        sc.n_spans = static_cast<int>(scan_state.size());
        sc.span_first_row = reinterpret_cast<const int64_t*>(table(o_scan_first_row));
        sc.span_length = reinterpret_cast<const int64_t*>(table(o_scan_length));
        sc.span_state = reinterpret_cast<float* const*>(table(o_scan_state));
        sc.state_offset = l * layer_floats;
        sc.span_first_tile = reinterpret_cast<const int64_t*>(table(o_scan_first_tile));
        sc.total_tiles = tiles;
        sc.tile_rows = tile_rows;
        sc.scratch = scratch;
        AAREN_CUDA_RETURN_IF_ERROR(LaunchAttentionScan(sc, stream), "attention scan kernel");
      }

      if (l + 1 < n_layers) {
        RETURN_IF_ERROR(Residual(w, x, attn, rows, normed, hidden));
        continue;
      }
      if (n_out == 0) break;  // the states are final; no output wanted
      // Last layer: only the rows whose outputs are wanted go on.
      const int64_t* index = reinterpret_cast<const int64_t*>(table(o_out_index));
      GatherRowsParams gx{x, index, xs, n_out, d};
      AAREN_CUDA_RETURN_IF_ERROR(LaunchGatherRows(gx, stream), "gather kernel");
      GatherRowsParams ga{attn, index, as, n_out, d};
      AAREN_CUDA_RETURN_IF_ERROR(LaunchGatherRows(ga, stream), "gather kernel");
      RETURN_IF_ERROR(Residual(w, xs, as, n_out, normed, hidden));
      RETURN_IF_ERROR(LayerNorm(n_out, xs, w.down_bias, norm_f_weight, norm_f_bias, normed));
      RETURN_IF_ERROR(Gemm(*blas, cublas, normed, n_out, d, head_weight, od, y, false));
      BiasActivationParams hb;
      hb.y = y;
      hb.rows = n_out;
      hb.cols = od;
      hb.bias = head_bias;
      AAREN_CUDA_RETURN_IF_ERROR(LaunchBiasActivation(hb, stream), "head bias kernel");
    }

    NonFiniteParams nf;
    nf.states = d_states;
    nf.n_states = n_live;
    nf.state_floats = state_floats;
    nf.outputs = y;
    nf.output_state = reinterpret_cast<const int32_t*>(table(o_out_state));
    nf.n_outputs = n_out;
    nf.output_dim = od;
    nf.flags = flags;
    AAREN_CUDA_RETURN_IF_ERROR(LaunchNonFinite(nf, stream), "finiteness kernel");
    // The only synchronisation: the results, the flags and the MCA counts come back together.
    AAREN_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(host + out_offset, y, n_out * od * 4, cudaMemcpyDeviceToHost, stream),
        "download of outputs");
    AAREN_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host + flags_offset, results, results_bytes,
                                               cudaMemcpyDeviceToHost, stream),
                               "download of flags and MCA counts");
    AAREN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream), "Forward");
    return absl::OkStatus();
  };

  auto restore = [&]() -> absl::Status {
    StateCopyParams back = save;
    back.restore = true;
    AAREN_CUDA_RETURN_IF_ERROR(LaunchStateCopy(back, stream), "state restore kernel");
    AAREN_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream), "state restore");
    return absl::OkStatus();
  };

  if (absl::Status st = run_layers(); !st.ok()) {
    const absl::Status restored = restore();
    if (!restored.ok()) {
      return absl::InternalError(absl::StrCat(
          st.message(), "; restoring the batch's states also failed (", restored.message(), ")"));
    }
    return st;
  }
  const int32_t* host_flags = reinterpret_cast<const int32_t*>(host + flags_offset);
  for (int k = 0; k < n_live; ++k) {
    if (host_flags[k] == 0) continue;
    RETURN_IF_ERROR(restore());
    return absl::InvalidArgumentError(absl::StrCat(
        "spans[", live[k],
        "]: activations overflow float32 (input values too large?); no state was changed"));
  }
  const float* host_out = reinterpret_cast<const float*>(host + out_offset);
  for (int k = 0; k < n_live; ++k) {
    const Span& s = spans[live[k]];
    const int64_t n = s.output == OutputSelect::kAll    ? length[k]
                      : s.output == OutputSelect::kLast ? 1
                                                        : 0;
    if (n > 0) std::memcpy(s.outputs, host_out, static_cast<size_t>(n * od) * sizeof(float));
    host_out += n * od;
    *s.position += length[k];
  }
  // Value-projection FLOPs: what the MCA spans' kernels counted, the exact product elsewhere.
  const unsigned long long* host_flops =
      reinterpret_cast<const unsigned long long*>(host + flags_offset + mca_flops_in_results);
  for (const Span& s : spans) {
    if (s.mca_counts != nullptr) *s.mca_counts = McaCounts{};
  }
  const int64_t exact_per_token = 2 * int64_t{d} * d * c.n_layers;
  for (int k = 0; k < n_live; ++k) {
    const Span& s = spans[live[k]];
    if (s.mca_counts == nullptr) continue;
    const int64_t exact = exact_per_token * length[k];
    const int64_t spent = mca_index[k] < 0 ? exact : static_cast<int64_t>(host_flops[mca_index[k]]);
    *s.mca_counts = McaCounts{spent, exact};
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<CudaBackend>> CudaBackend::Create(std::shared_ptr<const Model> model,
                                                                 CudaBackendOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->model = std::move(model);
  impl->device = options.device;
  RETURN_IF_ERROR(impl->Init());
  return std::unique_ptr<CudaBackend>(new CudaBackend(std::move(impl)));
}

CudaBackend::CudaBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
CudaBackend::~CudaBackend() = default;

const Model& CudaBackend::model() const { return *impl_->model; }
StateMemory& CudaBackend::state_memory() { return *impl_->memory; }
const std::string& CudaBackend::device_description() const { return impl_->description; }

absl::Status CudaBackend::Forward(absl::Span<const Span> spans) {
  Impl& im = *impl_;
  const ModelConfig& c = im.model->config();
  RETURN_IF_ERROR(ValidateSpans(c, spans));
  // The batch's size against the kernels' int32 limits, before any table of that size is built.
  const int tile_rows = AttentionScanTileRows(static_cast<int>(c.d_head()));
  int64_t rows = 0, live_spans = 0, tiles = 0;
  for (const Span& s : spans) {
    const int64_t len = s.length(c.n_features);
    if (len == 0) continue;
    ++live_spans;
    rows += len;
    if (len > 1) tiles += c.n_heads * ((len + tile_rows - 1) / tile_rows);
  }
  if (rows > INT_MAX || tiles > INT_MAX || live_spans > INT_MAX) {
    return absl::InvalidArgumentError(absl::StrCat("batch of ", rows, " tokens in ", live_spans,
                                                   " spans exceeds the CUDA backend's limit of ",
                                                   INT_MAX, " rows and scan tiles"));
  }
  if (live_spans == 0) {
    for (const Span& s : spans) {
      if (s.mca_counts != nullptr) *s.mca_counts = McaCounts{};
    }
    return absl::OkStatus();
  }
  std::lock_guard<std::mutex> lock(im.mu);
  for (size_t i = 0; i < spans.size(); ++i) {
    if (spans[i].length(c.n_features) == 0) continue;
    RETURN_IF_ERROR(im.CheckDeviceState(spans[i].state, c.state_floats(), i));
  }
  AAREN_CUDA_RETURN_IF_ERROR(cudaSetDevice(im.device), "cudaSetDevice");
  // Host tables are sized by the batch: their allocation failing is a refusal, not a crash
  // (Run changes no state before its tables are built).
  try {
    std::vector<int32_t> live;
    std::vector<int64_t> length;
    live.reserve(static_cast<size_t>(live_spans));
    length.reserve(static_cast<size_t>(live_spans));
    for (size_t i = 0; i < spans.size(); ++i) {
      const int64_t len = spans[i].length(c.n_features);
      if (len == 0) continue;
      live.push_back(static_cast<int32_t>(i));
      length.push_back(len);
    }
    return im.Run(spans, live, length, rows);
  } catch (const std::bad_alloc&) {
    return absl::ResourceExhaustedError(
        absl::StrCat("host memory for the CUDA backend's tables of a batch of ", rows,
                     " tokens in ", live_spans, " spans; no state was changed"));
  }
}

}  // namespace aaren::cuda

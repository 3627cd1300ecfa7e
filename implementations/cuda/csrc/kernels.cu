// msabench CUDA kernels: the fused binary/ternary MSA update and the one-launch E-MSA
// gradient of a dense residual stack. Plain CUDA with extern "C" launchers on raw
// pointers, so nvcc compiles this file alone (CI does, for sm_80 and sm_90); binding.cpp
// wraps the launchers for torch. Every launcher returns cudaGetLastError() after its
// launches, and the binding turns a failure into a Python exception.
//
// The math is implementations/torch/ops.py's (dmsa_update, emsa_dense_grad); the
// docstrings there state it.

#include <cuda_runtime.h>
#include <stdint.h>

namespace {

constexpr int kThreads = 256;

template <typename T>
__device__ T target_of(T m, bool ternary) {
  if (ternary) return m > T(0) ? T(1) : (m < T(0) ? T(-1) : T(0));
  return m >= T(0) ? T(1) : T(-1);  // sgn(0) = +1
}

// Tree reduction over the block (blockDim.x a power of two): s_max[0] = max of the
// threads' values, s_cnt[0] = sum of their counts.
template <typename T>
__device__ void block_max_and_sum(T* s_max, int* s_cnt, T value, int count) {
  s_max[threadIdx.x] = value;
  s_cnt[threadIdx.x] = count;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      s_max[threadIdx.x] = fmax(s_max[threadIdx.x], s_max[threadIdx.x + stride]);
      s_cnt[threadIdx.x] += s_cnt[threadIdx.x + stride];
    }
    __syncthreads();
  }
}

// Pass 1: M̄' = α M̄ + (1 - α) M (stored; both weights come from the host, formed in double); per block the max |M̄'| over wrong-signed entries
// and their count.
template <typename T, typename TW>
__global__ void ema_wrong_max(const T* m_bar, const T* m, const TW* w, T* out, T* block_max,
                              int* block_wrong, int64_t n, T alpha, T one_minus_alpha, bool ternary) {
  __shared__ T s_max[kThreads];
  __shared__ int s_cnt[kThreads];
  T local_max = T(0);
  int local_cnt = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    T v = alpha * m_bar[i] + one_minus_alpha * m[i];
    out[i] = v;
    if (T(w[i]) != target_of(v, ternary)) {
      local_max = fmax(local_max, fabs(v));
      local_cnt += 1;
    }
  }
  block_max_and_sum(s_max, s_cnt, local_max, local_cnt);
  if (threadIdx.x == 0) {
    block_max[blockIdx.x] = s_max[0];
    block_wrong[blockIdx.x] = s_cnt[0];
  }
}

// Between the passes, on the device: ρ_k = ρ · max over blocks, any = (Σ wrong > 0).
template <typename T>
__global__ void reduce_partials(const T* block_max, const int* block_wrong, int blocks, T rho, T* rho_k, int* any) {
  __shared__ T s_max[kThreads];
  __shared__ int s_cnt[kThreads];
  T mx = T(0);
  int cnt = 0;
  for (int i = threadIdx.x; i < blocks; i += blockDim.x) {
    mx = fmax(mx, block_max[i]);
    cnt += block_wrong[i];
  }
  block_max_and_sum(s_max, s_cnt, mx, cnt);
  if (threadIdx.x == 0) {
    *rho_k = rho * s_max[0];
    *any = s_cnt[0] > 0;
  }
}

// Pass 2: the binary or ternary rule per entry, W' stored, flips and non-zeros counted.
template <typename T, typename TW>
__global__ void apply_rule(const T* m_bar, const TW* w, TW* w_out, const T* rho_k_ptr, const int* any_ptr,
                           unsigned long long* flips, unsigned long long* nonzero, int64_t n, T lam, bool ternary) {
  __shared__ int s_flip[kThreads];
  __shared__ int s_nz[kThreads];
  const T rho_k = *rho_k_ptr;
  const bool any = *any_ptr != 0;
  int f = 0, nz = 0;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x) {
    const T m = m_bar[i];
    const T wi = T(w[i]);
    T next = wi;
    if (any) {
      if (ternary) {
        next = m > rho_k * (T(1) - T(2) * wi) + lam ? T(1) : (m < -rho_k * (T(1) + T(2) * wi) - lam ? T(-1) : T(0));
      } else {
        next = fabs(m) > rho_k ? target_of(m, false) : wi;
      }
    }
    w_out[i] = TW(next);
    f += next != wi;
    nz += next != T(0);
  }
  s_flip[threadIdx.x] = f;
  s_nz[threadIdx.x] = nz;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      s_flip[threadIdx.x] += s_flip[threadIdx.x + stride];
      s_nz[threadIdx.x] += s_nz[threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    atomicAdd(flips, (unsigned long long)s_flip[0]);
    atomicAdd(nonzero, (unsigned long long)s_nz[0]);
  }
}

template <typename T, typename TW>
cudaError_t launch_dmsa(const T* m_bar, const T* m, const TW* w, T* m_out, TW* w_out, T* block_max, int* block_wrong,
                        T* rho_k, int* any, unsigned long long* counts, int64_t n, int blocks, double alpha,
                        double one_minus_alpha, double rho, double lam, int levels, cudaStream_t stream) {
  const bool ternary = levels == 3;
  ema_wrong_max<T, TW><<<blocks, kThreads, 0, stream>>>(m_bar, m, w, m_out, block_max, block_wrong, n, T(alpha),
                                                        T(one_minus_alpha), ternary);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  reduce_partials<T><<<1, kThreads, 0, stream>>>(block_max, block_wrong, blocks, T(rho), rho_k, any);
  if ((err = cudaGetLastError()) != cudaSuccess) return err;
  cudaMemsetAsync(counts, 0, 2 * sizeof(unsigned long long), stream);
  apply_rule<T, TW><<<blocks, kThreads, 0, stream>>>(m_out, w, w_out, rho_k, any, counts, counts + 1, n, T(lam), ternary);
  return cudaGetLastError();
}

// E-MSA gradient of one dense residual layer per block (torch.ops.emsa_dense_grad), in two
// phases so that every sum has a fixed order (run-to-run reproducible, unlike atomicAdd):
// 1. threads stride over samples, each writing its sample's g = q ⊙ (1 - a²),
//    U = ρδ(p - q - δ g Wᵀ) and ∂H̃/∂z to the scratch buffer (3 × S × D per layer);
// 2. threads stride over the D² + D outputs, each summing its entry over the samples in
//    order: ∇W[i, j] = Σ_s x[s, i] dz[s, j] + U[s, i] g[s, j] - reg W[i, j],
//    ∇b[j] = Σ_s dz[s, j] - reg b[j]. d ≤ 32.
template <typename T>
__global__ void emsa_dense_grad_kernel(const T* w, const T* b, const T* x, const T* xn, const T* p, const T* pn,
                                       T* gw, T* gb, T* scratch, int S, int D, T delta, T rho, T reg) {
  constexpr int kMaxD = 32;
  __shared__ T s_w[kMaxD * kMaxD];
  const int layer = blockIdx.x;
  const T* wl = w + (int64_t)layer * D * D;
  for (int k = threadIdx.x; k < D * D; k += blockDim.x) s_w[k] = wl[k];
  __syncthreads();
  const int64_t base = (int64_t)layer * S * D;
  T* g_buf = scratch + 3 * base;
  T* u_buf = g_buf + (int64_t)S * D;
  T* dz_buf = u_buf + (int64_t)S * D;
  for (int s = threadIdx.x; s < S; s += blockDim.x) {
    const T* xs = x + base + (int64_t)s * D;
    const T* xns = xn + base + (int64_t)s * D;
    const T* ps = p + base + (int64_t)s * D;
    const T* qs = pn + base + (int64_t)s * D;
    T a[kMaxD], sech2[kMaxD], g[kMaxD], u[kMaxD];
    for (int j = 0; j < D; ++j) {
      T z = b[layer * D + j];
      for (int i = 0; i < D; ++i) z += xs[i] * s_w[i * D + j];
      a[j] = tanh(z);
      sech2[j] = T(1) - a[j] * a[j];
      g[j] = qs[j] * sech2[j];
      g_buf[(int64_t)s * D + j] = g[j];
    }
    for (int i = 0; i < D; ++i) {  // U = ρ δ (p - q - δ g Wᵀ)
      T gwt = T(0);
      for (int j = 0; j < D; ++j) gwt += g[j] * s_w[i * D + j];
      u[i] = rho * delta * (ps[i] - qs[i] - delta * gwt);
      u_buf[(int64_t)s * D + i] = u[i];
    }
    for (int j = 0; j < D; ++j) {
      T v = T(0);  // (U W)[j]
      for (int i = 0; i < D; ++i) v += u[i] * s_w[i * D + j];
      const T r1 = xns[j] - (xs[j] + delta * a[j]);
      dz_buf[(int64_t)s * D + j] = delta * (qs[j] + rho * r1) * sech2[j] - T(2) * v * qs[j] * a[j] * sech2[j];
    }
  }
  __syncthreads();
  for (int k = threadIdx.x; k < D * D + D; k += blockDim.x) {
    T acc = T(0);
    if (k < D * D) {
      const int i = k / D, j = k % D;
      for (int s = 0; s < S; ++s)
        acc += x[base + (int64_t)s * D + i] * dz_buf[(int64_t)s * D + j] + u_buf[(int64_t)s * D + i] * g_buf[(int64_t)s * D + j];
      gw[(int64_t)layer * D * D + k] = acc - reg * s_w[k];
    } else {
      const int j = k - D * D;
      for (int s = 0; s < S; ++s) acc += dz_buf[(int64_t)s * D + j];
      gb[layer * D + j] = acc - reg * b[layer * D + j];
    }
  }
}

}  // namespace

// One extern "C" launcher per dtype combination, so that the binding links to plain symbols.
#define MSABENCH_DMSA_LAUNCHER(NAME, T, TW)                                                                      \
  cudaError_t NAME(const T* m_bar, const T* m, const TW* w, T* m_out, TW* w_out, T* block_max, int* block_wrong, \
                   T* rho_k, int* any, unsigned long long* counts, int64_t n, int blocks, double alpha,          \
                   double one_minus_alpha, double rho, double lam, int levels, cudaStream_t stream) {             \
    return launch_dmsa<T, TW>(m_bar, m, w, m_out, w_out, block_max, block_wrong, rho_k, any, counts, n, blocks,  \
                              alpha, one_minus_alpha, rho, lam, levels, stream);                                  \
  }

#define MSABENCH_EMSA_LAUNCHER(NAME, T)                                                                         \
  cudaError_t NAME(const T* w, const T* b, const T* x, const T* xn, const T* p, const T* pn, T* gw, T* gb,      \
                   T* scratch, int L, int S, int D, double delta, double rho, double reg, cudaStream_t stream) { \
    emsa_dense_grad_kernel<T><<<L, 128, 0, stream>>>(w, b, x, xn, p, pn, gw, gb, scratch, S, D, T(delta),      \
                                                     T(rho), T(reg));                                            \
    return cudaGetLastError();                                                                                   \
  }

extern "C" {
MSABENCH_DMSA_LAUNCHER(msabench_dmsa_update_f32, float, float)
MSABENCH_DMSA_LAUNCHER(msabench_dmsa_update_f32_i8, float, int8_t)
MSABENCH_DMSA_LAUNCHER(msabench_dmsa_update_f64, double, double)
MSABENCH_EMSA_LAUNCHER(msabench_emsa_dense_grad_f32, float)
MSABENCH_EMSA_LAUNCHER(msabench_emsa_dense_grad_f64, double)
}  // extern "C"

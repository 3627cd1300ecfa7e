// torch binding of kernels.cu's launchers (compiled at first use by
// torch.utils.cpp_extension.load; see implementations/cuda/ops.py). Checks shapes, dtypes
// and devices, allocates outputs and the per-block partials, and raises on a launch error.

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime.h>
#include <torch/extension.h>

#include <tuple>

extern "C" {
cudaError_t msabench_dmsa_update_f32(const float*, const float*, const float*, float*, float*, float*, int*, float*,
                                     int*, unsigned long long*, int64_t, int, double, double, double, double, int,
                                     cudaStream_t);
cudaError_t msabench_dmsa_update_f32_i8(const float*, const float*, const int8_t*, float*, int8_t*, float*, int*,
                                        float*, int*, unsigned long long*, int64_t, int, double, double, double, double, int,
                                        cudaStream_t);
cudaError_t msabench_dmsa_update_f64(const double*, const double*, const double*, double*, double*, double*, int*,
                                     double*, int*, unsigned long long*, int64_t, int, double, double, double, double, int,
                                     cudaStream_t);
cudaError_t msabench_emsa_dense_grad_f32(const float*, const float*, const float*, const float*, const float*,
                                         const float*, float*, float*, float*, int, int, int, double, double, double,
                                         cudaStream_t);
cudaError_t msabench_emsa_dense_grad_f64(const double*, const double*, const double*, const double*, const double*,
                                         const double*, double*, double*, double*, int, int, int, double, double, double,
                                         cudaStream_t);
}

static void check(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, what, " failed: ", cudaGetErrorString(err));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> dmsa_update(at::Tensor m_bar, at::Tensor m, at::Tensor w,
                                                                       double alpha, double one_minus_alpha,
                                                                       double rho, int64_t levels, double lam) {
  TORCH_CHECK(levels == 2 || levels == 3, "levels must be 2 (binary) or 3 (ternary)");
  TORCH_CHECK(m_bar.is_cuda() && m.is_cuda() && w.is_cuda(), "dmsa_update: tensors must be on a CUDA device");
  TORCH_CHECK(m.device() == m_bar.device() && w.device() == m_bar.device(), "dmsa_update: tensors on different devices");
  TORCH_CHECK(m_bar.sizes() == m.sizes() && m.sizes() == w.sizes(), "dmsa_update: shapes differ");
  const c10::cuda::CUDAGuard guard(m_bar.device());
  m_bar = m_bar.contiguous();
  m = m.contiguous();
  w = w.contiguous();
  const int64_t n = m_bar.numel();
  const int blocks = static_cast<int>(std::min<int64_t>(std::max<int64_t>((n + 255) / 256, 1), 4096));
  auto fopts = m_bar.options();
  auto iopts = m_bar.options().dtype(at::kInt);
  auto m_out = at::empty_like(m_bar);
  auto w_out = at::empty_like(w);
  auto block_max = at::empty({blocks}, fopts);
  auto block_wrong = at::empty({blocks}, iopts);
  auto rho_k = at::empty({1}, fopts);
  auto any = at::empty({1}, iopts);
  auto counts = at::empty({2}, m_bar.options().dtype(at::kLong));
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  auto* c = reinterpret_cast<unsigned long long*>(counts.data_ptr<int64_t>());
  if (m_bar.scalar_type() == at::kFloat && w.scalar_type() == at::kFloat) {
    check(msabench_dmsa_update_f32(m_bar.data_ptr<float>(), m.data_ptr<float>(), w.data_ptr<float>(),
                                   m_out.data_ptr<float>(), w_out.data_ptr<float>(), block_max.data_ptr<float>(),
                                   block_wrong.data_ptr<int>(), rho_k.data_ptr<float>(), any.data_ptr<int>(), c, n,
                                   blocks, alpha, one_minus_alpha, rho, lam, static_cast<int>(levels), stream),
          "dmsa_update");
  } else if (m_bar.scalar_type() == at::kFloat && w.scalar_type() == at::kChar) {
    check(msabench_dmsa_update_f32_i8(m_bar.data_ptr<float>(), m.data_ptr<float>(), w.data_ptr<int8_t>(),
                                      m_out.data_ptr<float>(), w_out.data_ptr<int8_t>(), block_max.data_ptr<float>(),
                                      block_wrong.data_ptr<int>(), rho_k.data_ptr<float>(), any.data_ptr<int>(), c, n,
                                      blocks, alpha, one_minus_alpha, rho, lam, static_cast<int>(levels), stream),
          "dmsa_update");
  } else if (m_bar.scalar_type() == at::kDouble && w.scalar_type() == at::kDouble) {
    check(msabench_dmsa_update_f64(m_bar.data_ptr<double>(), m.data_ptr<double>(), w.data_ptr<double>(),
                                   m_out.data_ptr<double>(), w_out.data_ptr<double>(), block_max.data_ptr<double>(),
                                   block_wrong.data_ptr<int>(), rho_k.data_ptr<double>(), any.data_ptr<int>(), c, n,
                                   blocks, alpha, one_minus_alpha, rho, lam, static_cast<int>(levels), stream),
          "dmsa_update");
  } else {
    TORCH_CHECK(false, "dmsa_update: M̄ float32 with W float32 or int8, or both float64");
  }
  return {m_out, w_out, counts[0], counts[1]};
}

std::tuple<at::Tensor, at::Tensor> emsa_dense_grad(at::Tensor w, at::Tensor b, at::Tensor x, at::Tensor xn,
                                                   at::Tensor p, at::Tensor pn, double delta, double rho, double reg) {
  TORCH_CHECK(x.dim() == 3 && w.dim() == 3 && b.dim() == 2, "emsa_dense_grad: w (L,d,d), b (L,d), states (L,S,d)");
  const int L = x.size(0), S = x.size(1), D = x.size(2);
  TORCH_CHECK(w.size(0) == L && w.size(1) == D && w.size(2) == D && b.size(0) == L && b.size(1) == D,
              "emsa_dense_grad: w (L,d,d), b (L,d), states (L,S,d): shapes differ");
  TORCH_CHECK(xn.sizes() == x.sizes() && p.sizes() == x.sizes() && pn.sizes() == x.sizes(),
              "emsa_dense_grad: the four stored states must have one shape");
  TORCH_CHECK(D <= 32, "emsa_dense_grad: width ", D, " > 32");
  for (const at::Tensor* t : {&w, &b, &x, &xn, &p, &pn}) {
    TORCH_CHECK(t->is_cuda() && t->device() == x.device(), "emsa_dense_grad: tensors must be on one CUDA device");
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "emsa_dense_grad: tensors must share one dtype");
  }
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "emsa_dense_grad: float32 or float64 tensors");
  const c10::cuda::CUDAGuard guard(x.device());
  w = w.contiguous(); b = b.contiguous(); x = x.contiguous(); xn = xn.contiguous(); p = p.contiguous(); pn = pn.contiguous();
  auto gw = at::empty_like(w);
  auto gb = at::empty_like(b);
  auto scratch = at::empty({L, 3, S, D}, x.options());  // per sample g, U, ∂H̃/∂z: the fixed-order sums' terms
  auto stream = c10::cuda::getCurrentCUDAStream().stream();
  if (x.scalar_type() == at::kFloat) {
    check(msabench_emsa_dense_grad_f32(w.data_ptr<float>(), b.data_ptr<float>(), x.data_ptr<float>(),
                                       xn.data_ptr<float>(), p.data_ptr<float>(), pn.data_ptr<float>(),
                                       gw.data_ptr<float>(), gb.data_ptr<float>(), scratch.data_ptr<float>(), L, S, D,
                                       delta, rho, reg, stream),
          "emsa_dense_grad");
  } else {
    check(msabench_emsa_dense_grad_f64(w.data_ptr<double>(), b.data_ptr<double>(), x.data_ptr<double>(),
                                       xn.data_ptr<double>(), p.data_ptr<double>(), pn.data_ptr<double>(),
                                       gw.data_ptr<double>(), gb.data_ptr<double>(), scratch.data_ptr<double>(), L, S,
                                       D, delta, rho, reg, stream),
          "emsa_dense_grad");
  }
  return {gw, gb};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("dmsa_update", &dmsa_update, "fused binary/ternary MSA update (two passes)");
  m.def("emsa_dense_grad", &emsa_dense_grad, "E-MSA gradient of a dense residual stack, one launch");
}

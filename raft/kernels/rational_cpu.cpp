// Fused single-pass CPU kernel for the version-A rational activation
//
//     F(x) = P(x) / Q(x),  P(x) = sum_{k=0..m} a_k x^k,  Q(x) = 1 + sum_{j=1..n} |b_j| |x|^j.
//
// forward:  one pass, y = P/Q.
// backward: one pass that writes grad_x and accumulates the m+1+n coefficient gradients
//   dF/dx   = (P' - F * sign(x) * Qa') / Q      with Qa' = sum_j j |b_j| |x|^(j-1)
//   dF/da_k = x^k / Q
//   dF/db_j = -(F / Q) |x|^j * copysign(1, b_j)   (sign(0) = +1, so b_j = 0 still trains)
// The input is split into fixed chunks; each chunk sums in fp32 vector lanes over small
// blocks, folds the blocks into fp64 and stores its own partials; the partials are added
// in chunk order, so the coefficient gradients do not depend on the number of threads.
//
// Math is in fp32 for fp32/fp16/bf16 inputs (at::opmath_type) and fp64 for fp64 inputs.
// Degrees (5, 4) get a fully unrolled instantiation; other degrees up to RAFT_MAX_DEG use a
// run-time loop. Hot loops are compiled for several ISAs (target_clones) and picked at load
// time, so one cached build is correct on any x86-64 machine (no -march=native).

// Registered as torch ops (torch.ops.raft_rational.forward / .backward) without pybind11:
// only ATen headers, which keeps the first JIT build short.
#include <ATen/core/Tensor.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(RAFT_NO_CLONES)
#define RAFT_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define RAFT_CLONES
#endif

namespace {

constexpr int RAFT_MAX_DEG = 16;
constexpr int64_t CHUNK = 1 << 16;  // elements per parallel work item (fixed: deterministic sums)
constexpr int64_t BLOCK = 1024;     // elements summed in fp32 lanes before folding into fp64

// Element load/store in the compute type. The 16-bit types use plain bit arithmetic (or the
// compiler's _Float16) so the loops stay vectorisable; c10's converters are not.
template <typename scalar_t>
struct IO {
  using raw = scalar_t;
  using acc = at::opmath_type<scalar_t>;
  static inline acc load(raw v) { return static_cast<acc>(v); }
  static inline raw store(acc v) { return static_cast<raw>(v); }
};
template <>
struct IO<c10::BFloat16> {
  using raw = uint16_t;
  using acc = float;
  static inline float load(uint16_t v) {
    const uint32_t u = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
  }
  static inline uint16_t store(float f) {  // round to nearest even, NaN stays NaN
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    const uint32_t r = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
    return static_cast<uint16_t>(f != f ? 0x7FC0u : r);
  }
};
#if defined(__FLT16_MAX__)
template <>
struct IO<c10::Half> {
  using raw = _Float16;
  using acc = float;
  static inline float load(_Float16 v) { return static_cast<float>(v); }
  static inline _Float16 store(float v) { return static_cast<_Float16>(v); }
};
#endif

template <typename acc_t>
struct Coefs {
  int m, n;
  acc_t a[RAFT_MAX_DEG + 1];  // a_0..a_m
  acc_t da[RAFT_MAX_DEG];     // k a_k, k = 1..m        (P' coefficients)
  acc_t b[RAFT_MAX_DEG];      // |b_j|, j = 1..n
  acc_t db[RAFT_MAX_DEG];     // j |b_j|, j = 1..n      (Qa' coefficients)
  double bsign[RAFT_MAX_DEG]; // copysign(1, b_j)
};

template <typename acc_t>
Coefs<acc_t> make_coefs(const at::Tensor& num, const at::Tensor& den) {
  Coefs<acc_t> c{};
  auto a = num.detach().to(at::kCPU, at::kDouble).contiguous();
  auto b = den.detach().to(at::kCPU, at::kDouble).contiguous();
  c.m = static_cast<int>(a.numel()) - 1;
  c.n = static_cast<int>(b.numel());
  TORCH_CHECK(c.m >= 1 && c.m <= RAFT_MAX_DEG && c.n >= 1 && c.n <= RAFT_MAX_DEG,
              "raft rational kernel: degrees must be in [1, ", RAFT_MAX_DEG, "], got (", c.m, ", ", c.n, ")");
  const double* pa = a.data_ptr<double>();
  const double* pb = b.data_ptr<double>();
  for (int k = 0; k <= c.m; ++k) c.a[k] = static_cast<acc_t>(pa[k]);
  for (int k = 1; k <= c.m; ++k) c.da[k - 1] = static_cast<acc_t>(k * pa[k]);
  for (int j = 1; j <= c.n; ++j) {
    c.b[j - 1] = static_cast<acc_t>(std::abs(pb[j - 1]));
    c.db[j - 1] = static_cast<acc_t>(j * std::abs(pb[j - 1]));
    c.bsign[j - 1] = std::copysign(1.0, pb[j - 1]);
  }
  return c;
}

// ---------------------------------------------------------------- forward
template <typename scalar_t, typename acc_t, int M, int N, typename raw = typename IO<scalar_t>::raw>
RAFT_CLONES void fwd_loop(const raw* __restrict x, raw* __restrict y, int64_t len, const Coefs<acc_t>& c) {
  const int m = M > 0 ? M : c.m;
  const int n = N > 0 ? N : c.n;
  acc_t a[RAFT_MAX_DEG + 1], b[RAFT_MAX_DEG];  // local copies: no aliasing with x / y
  for (int k = 0; k <= m; ++k) a[k] = c.a[k];
  for (int j = 0; j < n; ++j) b[j] = c.b[j];
#pragma omp simd
  for (int64_t i = 0; i < len; ++i) {
    const acc_t xv = IO<scalar_t>::load(x[i]);
    const acc_t ax = std::abs(xv);
    acc_t p = a[m];
    for (int k = m - 1; k >= 0; --k) p = p * xv + a[k];
    acc_t q = b[n - 1];
    for (int j = n - 2; j >= 0; --j) q = q * ax + b[j];
    q = q * ax + acc_t(1);  // Q >= 1: never divides by zero
    y[i] = IO<scalar_t>::store(p / q);
  }
}

// ---------------------------------------------------------------- backward
// sums[0..m] += sum_i g/Q * x^k ;  sums[m+1..m+n] += sum_i g F/Q * |x|^j  (sign applied later)
template <typename scalar_t, typename acc_t, int M, int N, bool COEF, typename raw = typename IO<scalar_t>::raw>
RAFT_CLONES void bwd_loop(const raw* __restrict g, const raw* __restrict x, raw* __restrict gx,
                          int64_t len, const Coefs<acc_t>& c, double* __restrict sums) {
  const int m = M > 0 ? M : c.m;
  const int n = N > 0 ? N : c.n;
  acc_t a[RAFT_MAX_DEG + 1], da[RAFT_MAX_DEG], b[RAFT_MAX_DEG], db[RAFT_MAX_DEG];
  for (int k = 0; k <= m; ++k) a[k] = c.a[k];
  for (int k = 0; k < m; ++k) da[k] = c.da[k];
  for (int j = 0; j < n; ++j) { b[j] = c.b[j]; db[j] = c.db[j]; }
  constexpr int NA = M > 0 ? M + 1 : RAFT_MAX_DEG + 1;
  constexpr int NB = N > 0 ? N : RAFT_MAX_DEG;
  constexpr int L = 64 / sizeof(acc_t);  // lanes: one 512-bit vector of partial sums per coefficient
  // One element: writes gx[i], adds its coefficient terms to lane `l` of the partial sums.
  auto element = [&](int64_t i, acc_t (*sa)[L], acc_t (*sb)[L], int l) __attribute__((always_inline)) {
    const acc_t xv = IO<scalar_t>::load(x[i]);
    const acc_t ax = std::abs(xv);
    const acc_t sx = static_cast<acc_t>((xv > 0) - (xv < 0));  // d|x|/dx, 0 at x = 0
    acc_t p = a[m], dp = da[m - 1];
    for (int k = m - 1; k >= 0; --k) p = p * xv + a[k];
    for (int k = m - 2; k >= 0; --k) dp = dp * xv + da[k];
    acc_t q = b[n - 1], dq = db[n - 1];
    for (int j = n - 2; j >= 0; --j) q = q * ax + b[j];
    for (int j = n - 2; j >= 0; --j) dq = dq * ax + db[j];
    q = q * ax + acc_t(1);
    const acc_t inv = acc_t(1) / q;
    const acc_t f = p * inv;
    const acc_t gv = IO<scalar_t>::load(g[i]);
    gx[i] = IO<scalar_t>::store(gv * (dp - f * sx * dq) * inv);
    if (COEF) {
      acc_t t = gv * inv;  // g/Q * x^k
      sa[0][l] += t;
      for (int k = 1; k <= m; ++k) { t *= xv; sa[k][l] += t; }
      acc_t u = gv * f * inv;  // g F/Q * |x|^j
      for (int j = 0; j < n; ++j) { u *= ax; sb[j][l] += u; }
    }
  };
  for (int64_t start = 0; start < len; start += BLOCK) {
    const int64_t stop = std::min(start + BLOCK, len);
    alignas(64) acc_t sa[NA][L] = {}, sb[NB][L] = {};
    int64_t i = start;
    for (; i + L <= stop; i += L) {
#pragma omp simd
      for (int l = 0; l < L; ++l) element(i + l, sa, sb, l);
    }
    for (int l = 0; i < stop; ++i, ++l) element(i, sa, sb, l);  // tail (< L elements)
    if (COEF) {
      for (int k = 0; k <= m; ++k) { double s = 0; for (int l = 0; l < L; ++l) s += sa[k][l]; sums[k] += s; }
      for (int j = 0; j < n; ++j) { double s = 0; for (int l = 0; l < L; ++l) s += sb[j][l]; sums[m + 1 + j] += s; }
    }
  }
}

bool fixed54(const at::Tensor& num, const at::Tensor& den) {
  return num.numel() == 6 && den.numel() == 4;
}

void check_input(const at::Tensor& x) {
  TORCH_CHECK(x.device().is_cpu(), "raft rational kernel: CPU tensors only");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "raft rational kernel: floating input required");
}

at::Tensor rational_forward(const at::Tensor& x_in, const at::Tensor& num, const at::Tensor& den) {
  check_input(x_in);
  const auto x = x_in.contiguous();
  auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t len = x.numel();
  const bool f54 = fixed54(num, den);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "raft_rational_forward", [&] {
    using acc_t = typename IO<scalar_t>::acc;
    const auto c = make_coefs<acc_t>(num, den);
    using raw = typename IO<scalar_t>::raw;
    const raw* px = reinterpret_cast<const raw*>(x.const_data_ptr<scalar_t>());
    raw* py = reinterpret_cast<raw*>(y.mutable_data_ptr<scalar_t>());
    at::parallel_for(0, len, CHUNK, [&](int64_t begin, int64_t end) {
      if (f54) fwd_loop<scalar_t, acc_t, 5, 4>(px + begin, py + begin, end - begin, c);
      else     fwd_loop<scalar_t, acc_t, 0, 0>(px + begin, py + begin, end - begin, c);
    });
  });
  return y;
}

// returns (grad_x, grad_numerator, grad_denominator); coefficient grads are fp64 (the caller
// casts them to the parameter dtype) and zero-size when need_coef is false.
std::vector<at::Tensor> rational_backward(const at::Tensor& g_in, const at::Tensor& x_in,
                                          const at::Tensor& num, const at::Tensor& den, bool need_coef) {
  check_input(x_in);
  TORCH_CHECK(g_in.sizes() == x_in.sizes() && g_in.scalar_type() == x_in.scalar_type(),
              "raft rational kernel: grad_output must match the input in shape and dtype");
  const auto x = x_in.contiguous();
  const auto g = g_in.contiguous();
  auto gx = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t len = x.numel();
  const int m = static_cast<int>(num.numel()) - 1, n = static_cast<int>(den.numel());
  const int ncoef = m + 1 + n;
  const int64_t nchunks = (len + CHUNK - 1) / CHUNK;
  std::vector<double> partial(need_coef ? nchunks * ncoef : 0, 0.0);
  const bool f54 = fixed54(num, den);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "raft_rational_backward", [&] {
    using acc_t = typename IO<scalar_t>::acc;
    const auto c = make_coefs<acc_t>(num, den);
    using raw = typename IO<scalar_t>::raw;
    const raw* pg = reinterpret_cast<const raw*>(g.const_data_ptr<scalar_t>());
    const raw* px = reinterpret_cast<const raw*>(x.const_data_ptr<scalar_t>());
    raw* pgx = reinterpret_cast<raw*>(gx.mutable_data_ptr<scalar_t>());
    at::parallel_for(0, nchunks, 1, [&](int64_t cb, int64_t ce) {
      for (int64_t ci = cb; ci < ce; ++ci) {
        const int64_t s = ci * CHUNK, l = std::min(CHUNK, len - s);
        double* sums = need_coef ? partial.data() + ci * ncoef : nullptr;
        if (f54 && need_coef)  bwd_loop<scalar_t, acc_t, 5, 4, true>(pg + s, px + s, pgx + s, l, c, sums);
        else if (f54)          bwd_loop<scalar_t, acc_t, 5, 4, false>(pg + s, px + s, pgx + s, l, c, sums);
        else if (need_coef)    bwd_loop<scalar_t, acc_t, 0, 0, true>(pg + s, px + s, pgx + s, l, c, sums);
        else                   bwd_loop<scalar_t, acc_t, 0, 0, false>(pg + s, px + s, pgx + s, l, c, sums);
      }
    });
  });
  auto opts = at::TensorOptions().dtype(at::kDouble);
  if (!need_coef) return {gx, at::zeros({0}, opts), at::zeros({0}, opts)};
  auto ga = at::zeros({m + 1}, opts), gb = at::zeros({n}, opts);
  double* pa = ga.data_ptr<double>();
  double* pb = gb.data_ptr<double>();
  for (int64_t ci = 0; ci < nchunks; ++ci) {  // fixed order: deterministic
    const double* s = partial.data() + ci * ncoef;
    for (int k = 0; k <= m; ++k) pa[k] += s[k];
    for (int j = 0; j < n; ++j) pb[j] += s[m + 1 + j];
  }
  const auto c = make_coefs<double>(num, den);
  for (int j = 0; j < n; ++j) pb[j] *= -c.bsign[j];
  return {gx, ga, gb};
}

}  // namespace

TORCH_LIBRARY(raft_rational, lib) {
  lib.def("forward(Tensor x, Tensor numerator, Tensor denominator) -> Tensor");
  lib.def("backward(Tensor grad, Tensor x, Tensor numerator, Tensor denominator, bool need_coef) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(raft_rational, CPU, lib) {
  lib.impl("forward", &rational_forward);
  lib.impl("backward", &rational_backward);
}

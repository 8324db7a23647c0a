#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/attention.h"
#include "util/error.h"

namespace intellect::cpu {

namespace {
double dot(const float* a, const float* b, int64_t n) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

// For every flat token, the position within its row where its segment starts:
// the first key it may attend to. All zeros without segments (plain causal).
std::vector<int64_t> first_keys(const int32_t* cu_seqlens, int64_t n_segments, int64_t B, int64_t T) {
  std::vector<int64_t> first(B * T, 0);
  if (cu_seqlens == nullptr) return first;
  check_segments(cu_seqlens, n_segments, B, T);
  for (int64_t k = 0; k < n_segments; ++k)
    for (int64_t i = cu_seqlens[k]; i < cu_seqlens[k + 1]; ++i) first[i] = cu_seqlens[k] % T;
  return first;
}
}  // namespace

void check_segments(const int32_t* cu, int64_t n, int64_t B, int64_t T) {
  const int64_t N = B * T;
  if (cu == nullptr) fail("document segments: cu_seqlens is null but ", n, " segments were given");
  if (n < B)
    fail("document segments: ", n, " segments for ", B, " rows; every row starts at least one segment");
  if (cu[0] != 0) fail("document segments: cu_seqlens[0] is ", cu[0], ", must be 0");
  if (cu[n] != N)
    fail("document segments: cu_seqlens[", n, "] is ", cu[n], ", must be the token count B*T = ", N);
  int64_t next_row = T;  // the next row start not yet seen
  for (int64_t k = 1; k <= n; ++k) {
    if (cu[k] <= cu[k - 1])
      fail("document segments: cu_seqlens[", k, "] = ", cu[k], " is not above cu_seqlens[", k - 1, "] = ",
           cu[k - 1], " (segments must be non-empty and in order)");
    if (cu[k] > next_row)
      fail("document segments: segment ", k - 1, " (tokens ", cu[k - 1], "..", cu[k] - 1, ") crosses the start of row ",
           next_row / T, " at token ", next_row, "; every row start must be a segment start");
    if (cu[k] == next_row) next_row += T;
  }
}

void attention_forward(float* out, float* lse, const float* qkv, const AttentionShape& s,
                       const int32_t* cu_seqlens, int64_t n_segments) {
  const int64_t hd = s.head_dim, group = s.n_heads / s.n_kv_heads, stride = s.qkv_stride();
  const int64_t k_off = s.n_heads * hd, v_off = k_off + s.n_kv_heads * hd;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const std::vector<int64_t> first = first_keys(cu_seqlens, n_segments, s.B, s.T);
#pragma omp parallel
  {
    std::vector<double> p(s.T), acc(hd);
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t h = 0; h < s.n_heads; ++h) {
        const int64_t g = h / group;
        for (int64_t t = 0; t < s.T; ++t) {
          const int64_t lo = first[b * s.T + t];
          const float* q = qkv + (b * s.T + t) * stride + h * hd;
          double m = -INFINITY;
          for (int64_t u = lo; u <= t; ++u) {
            p[u] = scale * dot(q, qkv + (b * s.T + u) * stride + k_off + g * hd, hd);
            if (p[u] > m) m = p[u];
          }
          double sum = 0.0;
          for (int64_t u = lo; u <= t; ++u) sum += (p[u] = std::exp(p[u] - m));
          std::fill(acc.begin(), acc.end(), 0.0);
          for (int64_t u = lo; u <= t; ++u) {
            const float* v = qkv + (b * s.T + u) * stride + v_off + g * hd;
            for (int64_t i = 0; i < hd; ++i) acc[i] += p[u] * v[i];
          }
          float* o = out + (b * s.T + t) * s.out_stride() + h * hd;
          for (int64_t i = 0; i < hd; ++i) o[i] = static_cast<float>(acc[i] / sum);
          lse[(b * s.n_heads + h) * s.T + t] = static_cast<float>(m + std::log(sum));
        }
      }
  }
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, const AttentionShape& s, const int32_t* cu_seqlens,
                        int64_t n_segments) {
  const int64_t hd = s.head_dim, group = s.n_heads / s.n_kv_heads, stride = s.qkv_stride();
  const int64_t k_off = s.n_heads * hd, v_off = k_off + s.n_kv_heads * hd;
  const double scale = 1.0 / std::sqrt(static_cast<double>(hd));
  const std::vector<int64_t> first = first_keys(cu_seqlens, n_segments, s.B, s.T);
  // One task per (batch, kv head): it owns that head's dk/dv, so the sums over
  // queries happen in a fixed order with no atomics.
#pragma omp parallel
  {
    std::vector<double> dq(hd), dk, dv;
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < s.B; ++b)
      for (int64_t g = 0; g < s.n_kv_heads; ++g) {
        dk.assign(s.T * hd, 0.0);
        dv.assign(s.T * hd, 0.0);
        for (int64_t h = g * group; h < (g + 1) * group; ++h)
          for (int64_t t = 0; t < s.T; ++t) {
            const int64_t row = b * s.T + t;
            const float* q = qkv + row * stride + h * hd;
            const float* dO = dout + row * s.out_stride() + h * hd;
            const float* O = out + row * s.out_stride() + h * hd;
            const double L = lse[(b * s.n_heads + h) * s.T + t];
            const double D = dot(dO, O, hd);
            std::fill(dq.begin(), dq.end(), 0.0);
            for (int64_t u = first[row]; u <= t; ++u) {
              const float* k = qkv + (b * s.T + u) * stride + k_off + g * hd;
              const float* v = qkv + (b * s.T + u) * stride + v_off + g * hd;
              const double p = std::exp(scale * dot(q, k, hd) - L);
              const double dp = dot(dO, v, hd);
              const double ds = p * (dp - D) * scale;
              for (int64_t i = 0; i < hd; ++i) {
                dq[i] += ds * k[i];
                dk[u * hd + i] += ds * q[i];
                dv[u * hd + i] += p * dO[i];
              }
            }
            float* dqo = dqkv + row * stride + h * hd;
            for (int64_t i = 0; i < hd; ++i) dqo[i] = static_cast<float>(dq[i]);
          }
        for (int64_t u = 0; u < s.T; ++u) {
          float* dko = dqkv + (b * s.T + u) * stride + k_off + g * hd;
          float* dvo = dqkv + (b * s.T + u) * stride + v_off + g * hd;
          for (int64_t i = 0; i < hd; ++i) {
            dko[i] = static_cast<float>(dk[u * hd + i]);
            dvo[i] = static_cast<float>(dv[u * hd + i]);
          }
        }
      }
  }
}

}  // namespace intellect::cpu

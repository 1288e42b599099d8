// Matrix-vector kernels for products of a few rows (the decode step), for CPUs.
//
// A decode step reads every weight once, so these kernels stream each weight row once (in the
// threads of PyTorch's own pool) and keep the arithmetic well below the memory speed. The AVX2 kernels
// read one weight row at a time, prefetching `kPrefetch` bytes ahead: each thread then reads a single
// sequential stream, which the CPU's prefetchers follow at full speed (four rows read side by side,
// four streams, delivered a third less on a 2-core AMD EPYC for bfloat16 and int8). Every
// instruction set lives in its own `#pragma GCC target` region, so one file compiled without -m
// flags holds them all; `paths()` reports which ones this CPU runs (cpuid), and Python picks.
//
//   out[m, n] = scale[n] * sum_k x[m, k] * w[n, k]      (scale = 1 for float weights)
//
// * "generic" kernels (AVX2+FMA, AVX-512): float32 activations, weights float32 / bfloat16 (/ int8 on
//   AVX-512) widened to float32 in registers, float32 accumulation. AVX2 takes sixteen bfloat16 weights
//   per load: shifted left they are the even ones in float32, masked the odd ones, so the activations
//   are split into even and odd once per product;
// * "avx512bf16": bfloat16 activations and weights, VDPBF16PS (float32 accumulation);
// * "avx512vnni" / "avxvnni": int8 weights, activations quantized once per product to int8 per
//   block of 32 inputs (scale = max|x| / 127), VPDPBUSD inner loop. The instruction multiplies
//   unsigned by signed bytes, so activations are stored as q + 128 and 128 * sum(w) is subtracted.
// * "avx2" int8: the same activation quantization, then VPMADDUBSW on |w| and x * sign(w) (llama.cpp's
//   AVX2 trick: the unsigned operand is |w|, exact for w = -128 too, the sign moves onto x).
// * int4 ("avx512vnni", "avxvnni", "avx2"): weights q in 0..15 with w = (q - 8) * scale + zero per group
//   of 64 or 128 inputs, laid out in tiles of four rows (see `Int4Problem`), activations quantized as
//   for int8 (signed); q is the unsigned operand of VPDPBUSD (VNNI) or of VPMADDUBSW (AVX2), and the
//   constant term (zero - 8 * scale) needs only the per-group sum of the quantized activations.
// * "dequantize_*": int8 / int4 rows to float32 or bfloat16, for prefill-sized products (then a GEMM).
//
// After the products, a decode step's other work on AVX2: attention of one query per row against its
// cache (`decode_attention`), Gemma's RMSNorm and gated GELU, the output soft-cap (a vectorized tanh)
// and argmax.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t kGrain = 16;  // weight rows per parallel task
constexpr int kPrefetch = 1024;  // bytes ahead in each weight row to prefetch

struct Problem {
  const void* x;       // [M, K] float32 (generic), bfloat16 (bf16), or quantized (vnni, avx2 int8)
  const void* w;       // [N, K]
  const float* scale;  // [N] or nullptr
  const float* xs;     // vnni, avx2 int8: per-lane / per-block activation scales
  const float* xaux;   // avx2 bfloat16: x split into even and odd per 16 inputs
  float* out;          // [M, N]
  int64_t M, N, K, Kp; // Kp: padded row length of quantized activations
};

using RowsFn = void (*)(const Problem&, int64_t, int64_t);

// int4 weights come in tiles of four rows (4t .. 4t+3), 2 * K bytes each: per 64 inputs (a chunk) four
// rows of 32 bytes, byte j of a row holding input j of the chunk in its low nibble and input 32 + j in
// its high nibble. A tile is one contiguous stream, and each activation load serves its four rows.
struct Int4Problem {
  const int8_t* xq;    // [M, K] quantized activations
  const float* dx;     // [M, K / 32] their scales, one per block of 32
  const float* xsum;   // [M, K / G] per group: sum over its blocks of dx * sum(xq)
  const uint8_t* w;    // [N / 4, 2 * K] tiles
  const uint16_t* sc;  // [N, K / G, 2] bfloat16 (scale, zero): w = (q - 8) * scale + zero
  float* out;          // [M, N]
  int64_t M, N, K, G;
};

using TilesFn = void (*)(const Int4Problem&, int64_t, int64_t);

// Runs `block<4>` on groups of four weight rows (four streams in flight, each activation load serving
// four products) and `block<1>` on the rest. `block<R>(p, n)` computes out[:, n .. n+R).
#define VLMZOO_ROWS(block)                                     \
  void rows(const Problem& p, int64_t n0, int64_t n1) {        \
    int64_t n = n0;                                            \
    for (; n + 4 <= n1; n += 4) block<4>(p, n);                \
    for (; n < n1; ++n) block<1>(p, n);                        \
  }
#define VLMZOO_PREFETCH(ptr) _mm_prefetch(reinterpret_cast<const char*>(ptr) + kPrefetch, _MM_HINT_T0)

inline float bf16_to_float(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}
inline uint16_t float_to_bf16(float f) {  // round to nearest even (values are finite)
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  return uint16_t((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}
inline float to_float(float v) { return v; }
inline float to_float(uint16_t v) { return bf16_to_float(v); }
inline float to_float(int8_t v) { return float(v); }

// ---- AVX2 + FMA ------------------------------------------------------------------------------------
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
inline __m256 load8(const uint16_t* p) {  // eight bfloat16 values widened to float32
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
}
// The layout the bfloat16 kernels read their float32 operand in: each 16 values as [8 even | 8 odd]
// (a 16-value bfloat16 load shifted left is the even ones, masked the odd ones); the tail past the last
// 16 as is. `unsplit` undoes it.
inline int64_t split_index(int64_t d) { return d / 16 * 16 + (d % 2) * 8 + (d % 16) / 2; }
inline void split(const float* x, float* xs, int64_t n) {
  const int64_t full = n / 16 * 16;
  for (int64_t d = 0; d < full; ++d) xs[split_index(d)] = x[d];
  for (int64_t d = full; d < n; ++d) xs[d] = x[d];
}
inline void unsplit(const float* xs, float* x, int64_t n) {
  const int64_t full = n / 16 * 16;
  for (int64_t d = 0; d < full; ++d) x[d] = xs[split_index(d)];
  for (int64_t d = full; d < n; ++d) x[d] = xs[d];
}
inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
template <typename W, int R>
void block(const Problem& p, int64_t n) {
  const W* w = static_cast<const W*>(p.w) + n * p.K;
  const int64_t K = p.K, full = K / 8 * 8;
  for (int64_t m = 0; m < p.M; ++m) {
    const float* x = static_cast<const float*>(p.x) + m * K;
    __m256 a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm256_setzero_ps();
    for (int64_t k = 0; k < full; k += 8) {
      __m256 xv = _mm256_loadu_ps(x + k);
      for (int r = 0; r < R; ++r) {
        if (m == 0) VLMZOO_PREFETCH(w + r * K + k);
        a[r] = _mm256_fmadd_ps(load8(w + r * K + k), xv, a[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      float s = hsum(a[r]);
      for (int64_t k = full; k < K; ++k) s += to_float(w[r * K + k]) * x[k];
      p.out[m * p.N + n + r] = p.scale ? s * p.scale[n + r] : s;
    }
  }
}
template <typename W>
void rows(const Problem& p, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) block<W, 4>(p, n);
  for (; n < n1; ++n) block<W, 1>(p, n);
}

// bfloat16 weights, one row at a time, 32 inputs (a cache line) per step. p.xaux holds x with each
// 16 inputs stored as [8 even | 8 odd] (the first K / 16 * 16 of them); the rest are read from p.x.
void bf16_rows(const Problem& p, int64_t n0, int64_t n1) {
  const __m256i odd = _mm256_set1_epi32(int(0xFFFF0000u));
  const int64_t K = p.K, lines = K / 32 * 32, full = K / 16 * 16;
  for (int64_t n = n0; n < n1; ++n) {
    const uint16_t* w = static_cast<const uint16_t*>(p.w) + n * K;
    for (int64_t m = 0; m < p.M; ++m) {
      const float* xs = p.xaux + m * full;
      const float* x = static_cast<const float*>(p.x) + m * K;
      __m256 a[4];
      for (int u = 0; u < 4; ++u) a[u] = _mm256_setzero_ps();
      int64_t k = 0;
      auto step = [&](int64_t at, int u) {
        const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + at));
        a[u] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), _mm256_loadu_ps(xs + at), a[u]);
        a[u + 1] = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, odd)), _mm256_loadu_ps(xs + at + 8), a[u + 1]);
      };
      for (; k < lines; k += 32) {
        if (m == 0) VLMZOO_PREFETCH(w + k);
        step(k, 0);
        step(k + 16, 2);
      }
      if (k < full) step(k, 0);
      float s = hsum(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), _mm256_add_ps(a[2], a[3])));
      for (k = full; k < K; ++k) s += bf16_to_float(w[k]) * x[k];
      p.out[m * p.N + n] = s;
    }
  }
}

// int8 weights against activations quantized per block of 32 (p.x: q [M, Kp], p.xs: one scale per
// block; padded with q = 0 to Kp, a multiple of 32), one row at a time, 64 inputs per step.
// VPMADDUBSW(|w|, q * sign(w)) gives the products' pair sums exactly (at most 2 * 128 * 127 < 2^15).
void int8_rows(const Problem& p, int64_t n0, int64_t n1) {
  const __m256i ones = _mm256_set1_epi16(1);
  const int64_t K = p.K, Kp = p.Kp, full = K / 32 * 32, lines = K / 64 * 64;
  for (int64_t n = n0; n < n1; ++n) {
    const int8_t* w = static_cast<const int8_t*>(p.w) + n * K;
    alignas(32) int8_t tail[32] = {};
    if (full < K) std::memcpy(tail, w + full, K - full);  // never read past the row's end
    for (int64_t m = 0; m < p.M; ++m) {
      const int8_t* q = static_cast<const int8_t*>(p.x) + m * Kp;
      const float* d = p.xs + m * (Kp / 32);
      __m256 a[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
      auto step = [&](const int8_t* wk, int64_t at, int u) {
        const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wk));
        const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + at));
        const __m256i sum = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(qv, wv)), ones);
        a[u] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), _mm256_broadcast_ss(d + at / 32), a[u]);
      };
      int64_t k = 0;
      for (; k < lines; k += 64) {
        if (m == 0) VLMZOO_PREFETCH(w + k);
        step(w + k, k, 0);
        step(w + k + 32, k + 32, 1);
      }
      if (k < full) step(w + k, k, 0), k += 32;
      if (k < K) step(tail, k, 1);
      p.out[m * p.N + n] = hsum(_mm256_add_ps(a[0], a[1])) * p.scale[n];
    }
  }
}
}  // namespace avx2
#pragma GCC pop_options

// The 256-bit int4 tile, for AVX2 (VPMADDUBSW + VPMADDWD) and AVX-VNNI (VPDPBUSD): DOT(q, x) gives eight
// int32 sums of four products of unsigned q and signed x. Each chunk is two blocks of 32 inputs: the
// low nibbles meet the first block, the high nibbles the second.
#define VLMZOO_INT4_TILES_256(DOT)                                                                   \
  void int4_tile(const Int4Problem& p, int64_t t) {                                                  \
    const int64_t K = p.K, groups = K / p.G, per_group = p.G / 64;                                   \
    const uint8_t* w = p.w + t * 2 * K;                                                              \
    const uint16_t* sc = p.sc + t * 4 * groups * 2;                                                  \
    const __m256i low4 = _mm256_set1_epi8(0x0F);                                                     \
    for (int64_t m = 0; m < p.M; ++m) {                                                              \
      const int8_t* xq = p.xq + m * K;                                                               \
      const float* dx = p.dx + m * (K / 32);                                                         \
      const float* xsum = p.xsum + m * groups;                                                       \
      __m256 acc[4];                                                                                 \
      float base[4] = {0.f, 0.f, 0.f, 0.f};                                                          \
      for (int r = 0; r < 4; ++r) acc[r] = _mm256_setzero_ps();                                      \
      for (int64_t g = 0; g < groups; ++g) {                                                         \
        __m256 ga[4];                                                                                \
        for (int r = 0; r < 4; ++r) ga[r] = _mm256_setzero_ps();                                     \
        for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {                              \
          const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + c * 64));     \
          const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xq + c * 64 + 32)); \
          const __m256 d0 = _mm256_set1_ps(dx[2 * c]), d1 = _mm256_set1_ps(dx[2 * c + 1]);           \
          const uint8_t* src = w + c * 128;                                                          \
          if (m == 0) {                                                                              \
            VLMZOO_PREFETCH(src);                                                                    \
            VLMZOO_PREFETCH(src + 64);                                                               \
          }                                                                                          \
          for (int r = 0; r < 4; ++r) {                                                              \
            const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + r * 32));   \
            const __m256i lo = _mm256_and_si256(v, low4);                                            \
            const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), low4);                     \
            ga[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(lo, x0)), d0, ga[r]);                     \
            ga[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(DOT(hi, x1)), d1, ga[r]);                     \
          }                                                                                          \
        }                                                                                            \
        for (int r = 0; r < 4; ++r) {                                                                \
          const uint16_t* s = sc + (r * groups + g) * 2;                                             \
          acc[r] = _mm256_fmadd_ps(ga[r], _mm256_set1_ps(bf16_to_float(s[0])), acc[r]);              \
          base[r] += (bf16_to_float(s[1]) - 8.f * bf16_to_float(s[0])) * xsum[g];                                                  \
        }                                                                                            \
      }                                                                                              \
      for (int r = 0; r < 4; ++r) p.out[m * p.N + 4 * t + r] = avx2::hsum(acc[r]) + base[r];         \
    }                                                                                                \
  }                                                                                                  \
  void int4_tiles(const Int4Problem& p, int64_t t0, int64_t t1) {                                    \
    for (int64_t t = t0; t < t1; ++t) int4_tile(p, t);                                               \
  }

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2_int4 {
inline __m256i dot(__m256i q, __m256i x) { return _mm256_madd_epi16(_mm256_maddubs_epi16(q, x), _mm256_set1_epi16(1)); }
VLMZOO_INT4_TILES_256(dot)

// Rows [n0, n1) of an int8 weight times their scales, or of an int4 weight (n0, n1 multiples of 4), into
// `out` [n1 - n0, K] as float32 or bfloat16: the weight a prefill-sized product then hands to a GEMM.
inline void store8(float* dst, __m256 v) { _mm256_storeu_ps(dst, v); }
inline void store8(uint16_t* dst, __m256 v) {  // round to nearest even, as float_to_bf16
  __m256i b = _mm256_castps_si256(v);
  const __m256i odd = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
  b = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), odd)), 16);
  const __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), packed);
}
inline void store1(float* dst, float v) { *dst = v; }
inline void store1(uint16_t* dst, float v) { *dst = float_to_bf16(v); }

template <typename O>
void dequantize_int8_rows(const int8_t* w, const float* scale, int64_t K, int64_t n0, int64_t n1, O* out) {
  for (int64_t n = n0; n < n1; ++n) {
    const __m256 s = _mm256_set1_ps(scale[n]);
    const int8_t* src = w + n * K;
    O* dst = out + n * K;
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
      const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + k)));
      store8(dst + k, _mm256_mul_ps(_mm256_cvtepi32_ps(v), s));
    }
    for (; k < K; ++k) store1(dst + k, float(src[k]) * scale[n]);
  }
}

template <typename O>
void dequantize_int4_tiles(const uint8_t* w, const uint16_t* sc, int64_t K, int64_t G, int64_t t0, int64_t t1, O* out) {
  const int64_t groups = K / G;
  const __m256i low4 = _mm256_set1_epi32(15), eight = _mm256_set1_epi32(8);
  for (int64_t t = t0; t < t1; ++t) {
    for (int r = 0; r < 4; ++r) {
      const int64_t n = 4 * t + r;
      O* dst = out + n * K;
      for (int64_t c = 0; c < K / 64; ++c) {
        const uint8_t* src = w + t * 2 * K + c * 128 + r * 32;
        const uint16_t* s = sc + (n * groups + c * 64 / G) * 2;
        const __m256 scale = _mm256_set1_ps(bf16_to_float(s[0])), zero = _mm256_set1_ps(bf16_to_float(s[1]));
        for (int j = 0; j < 32; j += 8) {
          const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + j)));
          const __m256i lo = _mm256_sub_epi32(_mm256_and_si256(v, low4), eight);
          const __m256i hi = _mm256_sub_epi32(_mm256_srli_epi32(v, 4), eight);
          store8(dst + c * 64 + j, _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), scale, zero));
          store8(dst + c * 64 + 32 + j, _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), scale, zero));
        }
      }
    }
  }
}
}  // namespace avx2_int4
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avxvnni")
namespace avxvnni {
using avx2::hsum;
// int8 x int8 with AVX-VNNI (256-bit): one block of 32 inputs per vector; the weight tail is copied
// into a zeroed vector (its activations are padded with q = 0).
template <int R>
void block(const Problem& p, int64_t n) {
  const int64_t K = p.K, full = K / 32 * 32;
  const int8_t* w = static_cast<const int8_t*>(p.w) + n * K;
  const __m256i c128 = _mm256_set1_epi8(char(0x80)), zero = _mm256_setzero_si256();
  __m256i tail[R];
  for (int r = 0; r < R; ++r) {
    alignas(32) int8_t bytes[32] = {};
    if (full < K) std::memcpy(bytes, w + r * K + full, K - full);
    tail[r] = _mm256_load_si256(reinterpret_cast<const __m256i*>(bytes));
  }
  for (int64_t m = 0; m < p.M; ++m) {
    const uint8_t* xu = static_cast<const uint8_t*>(p.x) + m * p.Kp;
    const float* xs = p.xs + m * (p.Kp / 32);
    __m256 a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm256_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
      __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(xu + k));
      __m256 scale = _mm256_set1_ps(xs[k / 32]);
      for (int r = 0; r < R; ++r) {
        if (m == 0) VLMZOO_PREFETCH(w + r * K + k);
        __m256i wv = k < full ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + r * K + k)) : tail[r];
        __m256i d = _mm256_sub_epi32(_mm256_dpbusd_avx_epi32(zero, xv, wv), _mm256_dpbusd_avx_epi32(zero, c128, wv));
        a[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), scale, a[r]);
      }
    }
    for (int r = 0; r < R; ++r) p.out[m * p.N + n + r] = hsum(a[r]) * p.scale[n + r];
  }
}
VLMZOO_ROWS(block)

inline __m256i dot(__m256i q, __m256i x) { return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), q, x); }
VLMZOO_INT4_TILES_256(dot)
}  // namespace avxvnni
#pragma GCC pop_options

// ---- AVX-512 ---------------------------------------------------------------------------------------
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,fma")
namespace avx512 {
inline __m512 load16(const float* p, __mmask16 k) { return _mm512_maskz_loadu_ps(k, p); }
inline __m512 load16(const uint16_t* p, __mmask16 k) {
  __m256i v = _mm256_maskz_loadu_epi16(k, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}
inline __m512 load16(const int8_t* p, __mmask16 k) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, p)));
}
template <typename W, int R>
void block(const Problem& p, int64_t n) {
  const W* w = static_cast<const W*>(p.w) + n * p.K;
  const int64_t K = p.K;
  for (int64_t m = 0; m < p.M; ++m) {
    const float* x = static_cast<const float*>(p.x) + m * K;
    __m512 a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 16) {
      const __mmask16 mk = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
      __m512 xv = _mm512_maskz_loadu_ps(mk, x + k);
      for (int r = 0; r < R; ++r) {
        if (m == 0) VLMZOO_PREFETCH(w + r * K + k);
        a[r] = _mm512_fmadd_ps(load16(w + r * K + k, mk), xv, a[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      float s = _mm512_reduce_add_ps(a[r]);
      p.out[m * p.N + n + r] = p.scale ? s * p.scale[n + r] : s;
    }
  }
}
template <typename W>
void rows(const Problem& p, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + 4 <= n1; n += 4) block<W, 4>(p, n);
  for (; n < n1; ++n) block<W, 1>(p, n);
}
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma")
namespace avx512bf16 {
template <int R>
void block(const Problem& p, int64_t n) {
  const uint16_t* w = static_cast<const uint16_t*>(p.w) + n * p.K;
  const int64_t K = p.K;
  for (int64_t m = 0; m < p.M; ++m) {
    const uint16_t* x = static_cast<const uint16_t*>(p.x) + m * K;
    __m512 a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 32) {
      const __mmask32 mk = K - k >= 32 ? __mmask32(0xFFFFFFFFu) : __mmask32((1u << (K - k)) - 1);
      __m512bh xv = (__m512bh)_mm512_maskz_loadu_epi16(mk, x + k);
      for (int r = 0; r < R; ++r) {
        if (m == 0) VLMZOO_PREFETCH(w + r * K + k);
        a[r] = _mm512_dpbf16_ps(a[r], (__m512bh)_mm512_maskz_loadu_epi16(mk, w + r * K + k), xv);
      }
    }
    for (int r = 0; r < R; ++r) p.out[m * p.N + n + r] = _mm512_reduce_add_ps(a[r]);
  }
}
VLMZOO_ROWS(block)
}  // namespace avx512bf16
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma")
namespace avx512vnni {
// 64 inputs (two blocks) per vector; p.xs holds one scale per 4 inputs (per int32 lane).
template <int R>
void block(const Problem& p, int64_t n) {
  const int8_t* w = static_cast<const int8_t*>(p.w) + n * p.K;
  const int64_t K = p.K;
  const __m512i c128 = _mm512_set1_epi8(char(0x80)), zero = _mm512_setzero_si512();
  for (int64_t m = 0; m < p.M; ++m) {
    const uint8_t* xu = static_cast<const uint8_t*>(p.x) + m * p.Kp;
    const float* xl = p.xs + m * (p.Kp / 4);
    __m512 a[R];
    for (int r = 0; r < R; ++r) a[r] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 64) {
      const __mmask64 mk = K - k >= 64 ? ~__mmask64(0) : ((__mmask64(1) << (K - k)) - 1);
      __m512i xv = _mm512_loadu_si512(xu + k);
      __m512 scale = _mm512_loadu_ps(xl + k / 4);
      for (int r = 0; r < R; ++r) {
        if (m == 0) VLMZOO_PREFETCH(w + r * K + k);
        __m512i wv = _mm512_maskz_loadu_epi8(mk, w + r * K + k);
        __m512i d = _mm512_sub_epi32(_mm512_dpbusd_epi32(zero, xv, wv), _mm512_dpbusd_epi32(zero, c128, wv));
        a[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d), scale, a[r]);
      }
    }
    for (int r = 0; r < R; ++r) p.out[m * p.N + n + r] = _mm512_reduce_add_ps(a[r]) * p.scale[n + r];
  }
}
VLMZOO_ROWS(block)

// int4: a chunk of 64 inputs per vector; lanes 0-7 hold the first block of 32, lanes 8-15 the second.
void int4_tile(const Int4Problem& p, int64_t t) {
  const int64_t K = p.K, groups = K / p.G, per_group = p.G / 64;
  const uint8_t* w = p.w + t * 2 * K;
  const uint16_t* sc = p.sc + t * 4 * groups * 2;
  const __m256i low4 = _mm256_set1_epi8(0x0F);
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t m = 0; m < p.M; ++m) {
    const int8_t* xq = p.xq + m * K;
    const float* dx = p.dx + m * (K / 32);
    const float* xsum = p.xsum + m * groups;
    __m512 acc[4];
    float base[4] = {0.f, 0.f, 0.f, 0.f};
    for (int r = 0; r < 4; ++r) acc[r] = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
      __m512 ga[4];
      for (int r = 0; r < 4; ++r) ga[r] = _mm512_setzero_ps();
      for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
        const __m512i xv = _mm512_loadu_si512(xq + c * 64);
        const __m512 d = _mm512_insertf32x8(_mm512_set1_ps(dx[2 * c]), _mm256_set1_ps(dx[2 * c + 1]), 1);
        const uint8_t* src = w + c * 128;
        if (m == 0) {
          VLMZOO_PREFETCH(src);
          VLMZOO_PREFETCH(src + 64);
        }
        for (int r = 0; r < 4; ++r) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + r * 32));
          const __m512i q = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_and_si256(v, low4)),
                                               _mm256_and_si256(_mm256_srli_epi16(v, 4), low4), 1);
          ga[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_dpbusd_epi32(zero, q, xv)), d, ga[r]);
        }
      }
      for (int r = 0; r < 4; ++r) {
        const uint16_t* s = sc + (r * groups + g) * 2;
        acc[r] = _mm512_fmadd_ps(ga[r], _mm512_set1_ps(bf16_to_float(s[0])), acc[r]);
        base[r] += (bf16_to_float(s[1]) - 8.f * bf16_to_float(s[0])) * xsum[g];
      }
    }
    for (int r = 0; r < 4; ++r) p.out[m * p.N + 4 * t + r] = _mm512_reduce_add_ps(acc[r]) + base[r];
  }
}
void int4_tiles(const Int4Problem& p, int64_t t0, int64_t t1) {
  for (int64_t t = t0; t < t1; ++t) int4_tile(p, t);
}
}  // namespace avx512vnni
#pragma GCC pop_options

bool has(const char* feature) {
  __builtin_cpu_init();
  if (!std::strcmp(feature, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  if (!std::strcmp(feature, "avx512"))
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq");
  if (!std::strcmp(feature, "avx512bf16")) return has("avx512") && __builtin_cpu_supports("avx512bf16");
  if (!std::strcmp(feature, "avx512vnni")) return has("avx512") && __builtin_cpu_supports("avx512vnni");
  if (!std::strcmp(feature, "avxvnni")) return has("avx2") && __builtin_cpu_supports("avxvnni");
  return false;
}

void run(RowsFn fn, const Problem& p) {
  at::parallel_for(0, p.N, kGrain, [&](int64_t n0, int64_t n1) { fn(p, n0, n1); });
}

void check(const torch::Tensor& x, const torch::Tensor& w) {
  TORCH_CHECK(x.dim() == 2 && w.dim() == 2 && x.size(1) == w.size(1), "x [M, K] and weight [N, K] expected");
  TORCH_CHECK(x.is_contiguous() && w.is_contiguous() && x.device().is_cpu() && w.device().is_cpu(),
              "contiguous CPU tensors expected");
}

torch::Tensor new_out(const torch::Tensor& x, const torch::Tensor& w) {
  return torch::empty({x.size(0), w.size(0)}, x.options().dtype(torch::kFloat32));
}

// Float32 activations, float32 / bfloat16 / int8 weights, optional float32 row scales.
torch::Tensor generic(torch::Tensor x, torch::Tensor w, std::optional<torch::Tensor> scale, std::string isa) {
  check(x, w);
  TORCH_CHECK(x.scalar_type() == torch::kFloat32, "float32 activations expected");
  TORCH_CHECK(isa == "avx2" || isa == "avx512", "isa must be avx2 or avx512");
  TORCH_CHECK(has(isa.c_str()), "this CPU lacks ", isa);
  auto out = new_out(x, w);
  Problem p{x.data_ptr(), w.data_ptr(), scale ? scale->data_ptr<float>() : nullptr, nullptr, nullptr,
            out.data_ptr<float>(), x.size(0), w.size(0), x.size(1), x.size(1)};
  const bool wide = isa == "avx512";
  switch (w.scalar_type()) {
    case torch::kFloat32: run(wide ? avx512::rows<float> : avx2::rows<float>, p); break;
    case torch::kBFloat16: {
      if (wide) {
        run(avx512::rows<uint16_t>, p);
        break;
      }
      const int64_t M = p.M, K = p.K, full = K / 16 * 16;
      const float* X = x.data_ptr<float>();
      std::vector<float> even_odd(M * full);
      for (int64_t m = 0; m < M; ++m) avx2::split(X + m * K, even_odd.data() + m * full, full);
      p.xaux = even_odd.data();
      run(avx2::bf16_rows, p);
      break;
    }
    case torch::kInt8:
      TORCH_CHECK(wide, "int8 weights on AVX2 take int8_avx2 (quantized activations)");
      run(avx512::rows<int8_t>, p);
      break;
    default: TORCH_CHECK(false, "weights must be float32, bfloat16 or int8");
  }
  return out;
}

torch::Tensor bf16(torch::Tensor x, torch::Tensor w) {
  check(x, w);
  TORCH_CHECK(x.scalar_type() == torch::kBFloat16 && w.scalar_type() == torch::kBFloat16, "bfloat16 expected");
  TORCH_CHECK(has("avx512bf16"), "this CPU lacks avx512bf16");
  auto out = new_out(x, w);
  Problem p{x.data_ptr(), w.data_ptr(), nullptr, nullptr, nullptr, out.data_ptr<float>(), x.size(0), w.size(0), x.size(1), x.size(1)};
  run(avx512bf16::rows, p);
  return out;
}

// x [M, K] to int8 per block of 32 inputs, scale max|x| / 127 (round to nearest even): q [M, Kp] and
// d [M, Kp / 32], both zero-initialized by the caller (the padding stays q = 0).
void quantize_per_block(const float* X, int64_t M, int64_t K, int64_t Kp, int8_t* q, float* d) {
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t b = 0; b * 32 < K; ++b) {
      const int64_t k0 = b * 32, k1 = std::min(K, k0 + 32);
      float amax = 0.f;
      for (int64_t k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(X[m * K + k]));
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      for (int64_t k = k0; k < k1; ++k) q[m * Kp + k] = int8_t(std::nearbyint(X[m * K + k] * inv));
      d[m * (Kp / 32) + b] = amax / 127.f;
    }
  }
}

// int8 weights with float32 row scales; float32 activations quantized here, per block of 32.
torch::Tensor int8_vnni(torch::Tensor x, torch::Tensor w, torch::Tensor scale, std::string isa) {
  check(x, w);
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kInt8, "float32 x, int8 weight expected");
  TORCH_CHECK(isa == "avx512vnni" || isa == "avxvnni", "isa must be avx512vnni or avxvnni");
  TORCH_CHECK(has(isa.c_str()), "this CPU lacks ", isa);
  const int64_t M = x.size(0), K = x.size(1), Kp = (K + 63) / 64 * 64, blocks = Kp / 32;
  const bool wide = isa == "avx512vnni";
  std::vector<int8_t> q(M * Kp, 0);
  std::vector<float> d(M * blocks, 0.f);
  quantize_per_block(x.data_ptr<float>(), M, K, Kp, q.data(), d.data());
  std::vector<uint8_t> xu(M * Kp);
  for (int64_t i = 0; i < M * Kp; ++i) xu[i] = uint8_t(q[i] + 128);
  std::vector<float> lanes;  // AVX-512: one scale per int32 lane (four inputs)
  if (wide) {
    lanes.resize(M * (Kp / 4));
    for (int64_t i = 0; i < M * (Kp / 4); ++i) lanes[i] = d[i / 8];
  }
  auto out = new_out(x, w);
  Problem p{xu.data(), w.data_ptr(), scale.data_ptr<float>(), wide ? lanes.data() : d.data(), nullptr,
            out.data_ptr<float>(), M, w.size(0), K, Kp};
  run(wide ? avx512vnni::rows : avxvnni::rows, p);
  return out;
}

// int8 weights with float32 row scales on AVX2; float32 activations quantized here, per block of 32
// (signed, scale max|x| / 127, as for VNNI).
torch::Tensor int8_avx2(torch::Tensor x, torch::Tensor w, torch::Tensor scale) {
  check(x, w);
  TORCH_CHECK(x.scalar_type() == torch::kFloat32 && w.scalar_type() == torch::kInt8, "float32 x, int8 weight expected");
  TORCH_CHECK(scale.scalar_type() == torch::kFloat32 && scale.is_contiguous() && scale.numel() == w.size(0),
              "float32 scales [N] expected");
  TORCH_CHECK(has("avx2"), "this CPU lacks avx2");
  const int64_t M = x.size(0), K = x.size(1), Kp = (K + 31) / 32 * 32;
  std::vector<int8_t> q(M * Kp, 0);
  std::vector<float> d(M * (Kp / 32), 0.f);
  quantize_per_block(x.data_ptr<float>(), M, K, Kp, q.data(), d.data());
  auto out = new_out(x, w);
  Problem p{q.data(), w.data_ptr(), scale.data_ptr<float>(), d.data(), nullptr, out.data_ptr<float>(), M, w.size(0), K, Kp};
  run(avx2::int8_rows, p);
  return out;
}

// int4 tiles [N / 4, 2K] as uint8 [N, K / 2], scales [N, K / G, 2] bfloat16; float32 activations
// quantized here per block of 32 (signed, scale max|x| / 127).
torch::Tensor int4(torch::Tensor x, torch::Tensor w, torch::Tensor scales, std::string isa) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.is_contiguous() && x.device().is_cpu(),
              "contiguous float32 CPU activations [M, K] expected");
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == torch::kByte && w.is_contiguous() && w.size(1) * 2 == x.size(1) &&
                  w.size(0) % 4 == 0 && x.size(1) % 64 == 0,
              "int4 tiles [N, K / 2] (uint8) expected, N a multiple of 4 and K of 64");
  TORCH_CHECK(scales.dim() == 3 && scales.scalar_type() == torch::kBFloat16 && scales.is_contiguous() &&
                  scales.size(0) == w.size(0) && scales.size(2) == 2 && x.size(1) % scales.size(1) == 0 &&
                  (x.size(1) / scales.size(1)) % 64 == 0,
              "bfloat16 scales [N, K / G, 2] expected, G a multiple of 64");
  TORCH_CHECK(isa == "avx512vnni" || isa == "avxvnni" || isa == "avx2", "isa must be avx512vnni, avxvnni or avx2");
  TORCH_CHECK(has(isa.c_str()), "this CPU lacks ", isa);
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0), groups = scales.size(1), G = K / groups;
  std::vector<int8_t> xq(M * K);
  std::vector<float> dx(M * (K / 32)), xsum(M * groups, 0.f);
  const float* X = x.data_ptr<float>();
  for (int64_t m = 0; m < M; ++m) {
    for (int64_t b = 0; b < K / 32; ++b) {
      const float* src = X + m * K + b * 32;
      float amax = 0.f;
      for (int k = 0; k < 32; ++k) amax = std::max(amax, std::fabs(src[k]));
      const float d = amax / 127.f, inv = amax > 0.f ? 127.f / amax : 0.f;
      int sum = 0;
      for (int k = 0; k < 32; ++k) {
        const int q = int(std::nearbyint(src[k] * inv));
        xq[m * K + b * 32 + k] = int8_t(q);
        sum += q;
      }
      dx[m * (K / 32) + b] = d;
      xsum[m * groups + b * 32 / G] += d * float(sum);
    }
  }
  auto out = torch::empty({M, N}, x.options());
  Int4Problem p{xq.data(), dx.data(), xsum.data(), w.data_ptr<uint8_t>(),
                reinterpret_cast<const uint16_t*>(scales.data_ptr()), out.data_ptr<float>(), M, N, K, G};
  TilesFn fn = isa == "avx512vnni" ? avx512vnni::int4_tiles : isa == "avxvnni" ? avxvnni::int4_tiles : avx2_int4::int4_tiles;
  at::parallel_for(0, N / 4, kGrain / 4, [&](int64_t t0, int64_t t1) { fn(p, t0, t1); });
  return out;
}

// Rows [n0, n1) of a quantized weight in floating point (`out`: [n1 - n0, K], float32 or bfloat16).
void dequantize_int8(torch::Tensor w, torch::Tensor scales, int64_t n0, int64_t n1, torch::Tensor out) {
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == torch::kInt8 && w.is_contiguous(), "int8 weight [N, K] expected");
  TORCH_CHECK(scales.scalar_type() == torch::kFloat32 && scales.is_contiguous() && scales.numel() == w.size(0),
              "float32 scales [N] expected");
  TORCH_CHECK(0 <= n0 && n0 <= n1 && n1 <= w.size(0) && out.is_contiguous() && out.dim() == 2 &&
                  out.size(0) >= n1 - n0 && out.size(1) == w.size(1),
              "out [n1 - n0, K] expected");
  TORCH_CHECK(has("avx2"), "this CPU lacks avx2");
  const int64_t K = w.size(1);
  const int8_t* W = w.data_ptr<int8_t>() + n0 * K;
  const float* S = scales.data_ptr<float>() + n0;
  if (out.scalar_type() == torch::kFloat32) {
    float* O = out.data_ptr<float>();
    at::parallel_for(0, n1 - n0, kGrain, [&](int64_t a, int64_t b) { avx2_int4::dequantize_int8_rows(W, S, K, a, b, O); });
  } else {
    TORCH_CHECK(out.scalar_type() == torch::kBFloat16, "out must be float32 or bfloat16");
    uint16_t* O = reinterpret_cast<uint16_t*>(out.data_ptr());
    at::parallel_for(0, n1 - n0, kGrain, [&](int64_t a, int64_t b) { avx2_int4::dequantize_int8_rows(W, S, K, a, b, O); });
  }
}

void dequantize_int4(torch::Tensor w, torch::Tensor scales, int64_t n0, int64_t n1, torch::Tensor out) {
  TORCH_CHECK(w.dim() == 2 && w.scalar_type() == torch::kByte && w.is_contiguous() && w.size(0) % 4 == 0 &&
                  w.size(1) % 32 == 0,
              "int4 tiles [N, K / 2] expected");
  const int64_t K = w.size(1) * 2;
  TORCH_CHECK(scales.dim() == 3 && scales.scalar_type() == torch::kBFloat16 && scales.is_contiguous() &&
                  scales.size(0) == w.size(0) && K % scales.size(1) == 0 && (K / scales.size(1)) % 64 == 0,
              "bfloat16 scales [N, K / G, 2] expected");
  TORCH_CHECK(0 <= n0 && n0 <= n1 && n1 <= w.size(0) && n0 % 4 == 0 && n1 % 4 == 0 && out.is_contiguous() &&
                  out.dim() == 2 && out.size(0) >= n1 - n0 && out.size(1) == K,
              "out [n1 - n0, K] expected, n0 and n1 multiples of 4");
  TORCH_CHECK(has("avx2"), "this CPU lacks avx2");
  const int64_t G = K / scales.size(1);
  const uint8_t* W = w.data_ptr<uint8_t>() + n0 * K / 2;
  const uint16_t* S = reinterpret_cast<const uint16_t*>(scales.data_ptr()) + n0 * (K / G) * 2;
  if (out.scalar_type() == torch::kFloat32) {
    float* O = out.data_ptr<float>();
    at::parallel_for(0, (n1 - n0) / 4, kGrain / 4, [&](int64_t a, int64_t b) { avx2_int4::dequantize_int4_tiles(W, S, K, G, a, b, O); });
  } else {
    TORCH_CHECK(out.scalar_type() == torch::kBFloat16, "out must be float32 or bfloat16");
    uint16_t* O = reinterpret_cast<uint16_t*>(out.data_ptr());
    at::parallel_for(0, (n1 - n0) / 4, kGrain / 4, [&](int64_t a, int64_t b) { avx2_int4::dequantize_int4_tiles(W, S, K, G, a, b, O); });
  }
}

// The whole product for Python in one call (each tensor conversion made from Python costs microseconds,
// and a decode step makes hundreds of products): x [M, K] of any floating dtype times a weight on the
// named path, plus an optional bias in float32, returned in float32 or in x's dtype.
torch::Tensor linear(torch::Tensor x, torch::Tensor w, std::optional<torch::Tensor> scales,
                     std::optional<torch::Tensor> bias, std::string isa, bool float32_out) {
  const auto dtype = float32_out ? torch::kFloat32 : x.scalar_type();
  w = w.contiguous();
  torch::Tensor out;
  if (w.scalar_type() == torch::kByte) {
    TORCH_CHECK(scales, "int4 weights need their scales");
    out = int4(x.to(torch::kFloat32).contiguous(), w, scales->to(torch::kBFloat16).contiguous(), isa);
  } else if (isa == "avx512bf16") {
    out = bf16(x.to(torch::kBFloat16).contiguous(), w);
  } else {
    const auto x32 = x.to(torch::kFloat32).contiguous();
    std::optional<torch::Tensor> scale32;
    if (scales) scale32 = scales->to(torch::kFloat32).contiguous();
    if (w.scalar_type() == torch::kInt8 && isa != "avx512") {
      TORCH_CHECK(scale32, "int8 weights need their scales");
      out = isa == "avx2" ? int8_avx2(x32, w, *scale32) : int8_vnni(x32, w, *scale32, isa);
    } else {
      out = generic(x32, w, scale32, isa);
    }
  }
  if (bias) out.add_(*bias);  // in float32: one rounding to x's dtype, as F.linear rounds
  return out.to(dtype);
}

// ---- Decode attention ---------------------------------------------------------------------------
// One query per row (a decode step) against its cache, for every head at once: scores q . k * scale,
// optionally soft-capped (cap * tanh(s / cap), Gemma 2), masked, softmax, then the weighted sum of the
// values, all in float32 in one pass over the cache. Spelled out with PyTorch this is a dozen small
// operators per layer, and their fixed costs came to 0.4 ms per layer on a 2-core AVX2 CPU (SDPA with
// grouped heads in bfloat16: 1.1 ms), several times the arithmetic.
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2_math {
// e^x to about 2 ulp (Cephes' expf: x = n ln2 + r, a degree-6 polynomial in r, 2^n from the exponent
// bits); x below -87.3 gives about 1e-38, not 0, and NaN gives NaN.
inline __m256 exp(__m256 x) {
  // min / max return their second operand when either is NaN: x goes second, so NaN stays NaN
  x = _mm256_min_ps(_mm256_set1_ps(88.7f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  for (float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f})
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(bits));
}
// tanh(x): the odd Taylor series to x^15 below |x| = 0.55 (error under 1e-7 relative there, where
// (e^2x - 1) / (e^2x + 1) would cancel), 1 - 2 / (e^2|x| + 1) above, the sign put back.
inline __m256 tanh(__m256 x) {
  const __m256 sign = _mm256_set1_ps(-0.f);
  const __m256 a = _mm256_min_ps(_mm256_set1_ps(9.f), _mm256_andnot_ps(sign, x));  // NaN stays NaN
  const __m256 a2 = _mm256_mul_ps(a, a);
  __m256 p = _mm256_set1_ps(-929569.f / 638512875.f);
  for (float c : {21844.f / 6081075.f, -1382.f / 155925.f, 62.f / 2835.f, -17.f / 315.f, 2.f / 15.f, -1.f / 3.f})
    p = _mm256_fmadd_ps(p, a2, _mm256_set1_ps(c));
  const __m256 small = _mm256_fmadd_ps(_mm256_mul_ps(p, a2), a, a);
  const __m256 e = exp(_mm256_add_ps(a, a));
  const __m256 large = _mm256_sub_ps(_mm256_set1_ps(1.f), _mm256_div_ps(_mm256_set1_ps(2.f), _mm256_add_ps(e, _mm256_set1_ps(1.f))));
  const __m256 t = _mm256_blendv_ps(large, small, _mm256_cmp_ps(a, _mm256_set1_ps(0.55f), _CMP_LT_OQ));
  return _mm256_or_ps(t, _mm256_and_ps(x, sign));
}
// out[i] = f(x[i], y[i]) for i < n, eight at a time; the last few through a zero-padded buffer.
template <typename F>
inline void map8(const float* x, const float* y, float* out, int64_t n, F f) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, f(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  if (i < n) {
    float xt[8] = {}, yt[8] = {};
    std::copy(x + i, x + n, xt);
    std::copy(y + i, y + n, yt);
    _mm256_storeu_ps(xt, f(_mm256_loadu_ps(xt), _mm256_loadu_ps(yt)));
    std::copy(xt, xt + (n - i), out + i);
  }
}
// out[i] = cap * tanh(x[i] / cap) for i < n (out may be x).
inline void softcap(const float* x, float* out, int64_t n, float cap) {
  const __m256 c = _mm256_set1_ps(cap), inv = _mm256_set1_ps(1.f / cap);
  map8(x, x, out, n, [&](__m256 v, __m256) { return _mm256_mul_ps(c, tanh(_mm256_mul_ps(v, inv))); });
}
// out[i] = gelu_tanh(g[i]) * u[i] = 0.5 g (1 + tanh(sqrt(2 / pi) (g + 0.044715 g^3))) * u, for i < n.
inline void gelu_mul(const float* g, const float* u, float* out, int64_t n) {
  const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.f), k0 = _mm256_set1_ps(0.7978845608028654f),
               k1 = _mm256_set1_ps(0.044715f);
  map8(g, u, out, n, [&](__m256 x, __m256 y) {
    const __m256 inner = _mm256_mul_ps(k0, _mm256_fmadd_ps(_mm256_mul_ps(k1, x), _mm256_mul_ps(x, x), x));
    return _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(half, x), _mm256_add_ps(one, tanh(inner))), y);
  });
}
}  // namespace avx2_math

namespace avx2_attention {
// <q, row> over D inputs; qs is q in `avx2::split`'s layout, for bfloat16 rows.
inline float dot(const float* q, const float* qs, const float* row, int64_t D) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 16 <= D; d += 16) {
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d), _mm256_loadu_ps(row + d), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + d + 8), _mm256_loadu_ps(row + d + 8), a1);
  }
  float s = avx2::hsum(_mm256_add_ps(a0, a1));
  for (; d < D; ++d) s += q[d] * row[d];
  return s;
}
inline float dot(const float* q, const float* qs, const uint16_t* row, int64_t D) {
  const __m256i odd = _mm256_set1_epi32(int(0xFFFF0000u));
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t d = 0;
  for (; d + 16 <= D; d += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + d));
    a0 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), _mm256_loadu_ps(qs + d), a0);
    a1 = _mm256_fmadd_ps(_mm256_castsi256_ps(_mm256_and_si256(v, odd)), _mm256_loadu_ps(qs + d + 8), a1);
  }
  float s = avx2::hsum(_mm256_add_ps(a0, a1));
  for (; d < D; ++d) s += q[d] * bf16_to_float(row[d]);
  return s;
}
// acc += p * row; for bfloat16 rows acc is in `avx2::split`'s layout.
inline void axpy(float p, const float* row, float* acc, int64_t D) {
  const __m256 pv = _mm256_set1_ps(p);
  int64_t d = 0;
  for (; d + 8 <= D; d += 8) _mm256_storeu_ps(acc + d, _mm256_fmadd_ps(pv, _mm256_loadu_ps(row + d), _mm256_loadu_ps(acc + d)));
  for (; d < D; ++d) acc[d] += p * row[d];
}
inline void axpy(float p, const uint16_t* row, float* acc, int64_t D) {
  const __m256i odd = _mm256_set1_epi32(int(0xFFFF0000u));
  const __m256 pv = _mm256_set1_ps(p);
  int64_t d = 0;
  for (; d + 16 <= D; d += 16) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + d));
    _mm256_storeu_ps(acc + d, _mm256_fmadd_ps(pv, _mm256_castsi256_ps(_mm256_slli_epi32(v, 16)), _mm256_loadu_ps(acc + d)));
    _mm256_storeu_ps(acc + d + 8, _mm256_fmadd_ps(pv, _mm256_castsi256_ps(_mm256_and_si256(v, odd)), _mm256_loadu_ps(acc + d + 8)));
  }
  for (; d < D; ++d) acc[d] += p * bf16_to_float(row[d]);
}
// q [B, H, D] float32; k, v [B, KV, S, D] (rows contiguous, any batch / head strides); mask [B, S] bool
// (True: may attend) or none; out [B, H, D] float32. Each task is one (row, query head).
template <typename T>
void heads(const float* Q, const T* Kc, const T* Vc, const bool* mask, float* out, int64_t B, int64_t H,
           int64_t KV, int64_t S, int64_t D, int64_t kb, int64_t kh, int64_t vb, int64_t vh, float scale,
           float cap, int64_t t0, int64_t t1) {
  constexpr bool half = std::is_same<T, uint16_t>::value;
  std::vector<float> scores(S), qs(D), acc(D);
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t b = t / H, h = t % H, g = h / (H / KV);
    const float* q = Q + t * D;
    if (half) avx2::split(q, qs.data(), D);
    const T* keys = Kc + b * kb + g * kh;
    const T* values = Vc + b * vb + g * vh;
    const bool* allowed = mask ? mask + b * S : nullptr;
    for (int64_t j = 0; j < S; ++j) scores[j] = allowed && !allowed[j] ? 0.f : dot(q, qs.data(), keys + j * D, D) * scale;
    if (cap > 0.f) avx2_math::softcap(scores.data(), scores.data(), S, cap);
    float top = -INFINITY;
    for (int64_t j = 0; j < S; ++j)
      if (!allowed || allowed[j]) top = std::max(top, scores[j]);
    int64_t j = 0;
    for (; j + 8 <= S; j += 8)
      _mm256_storeu_ps(&scores[j], avx2_math::exp(_mm256_sub_ps(_mm256_loadu_ps(&scores[j]), _mm256_set1_ps(top))));
    for (; j < S; ++j) scores[j] = std::exp(scores[j] - top);
    float total = 0.f;
    for (j = 0; j < S; ++j) {
      if (allowed && !allowed[j]) scores[j] = 0.f;
      total += scores[j];
    }
    std::fill(acc.begin(), acc.end(), 0.f);
    for (int64_t j = 0; j < S; ++j)
      if (!allowed || allowed[j]) axpy(scores[j] / total, values + j * D, acc.data(), D);
    if (half)
      avx2::unsplit(acc.data(), out + t * D, D);
    else
      std::copy(acc.begin(), acc.end(), out + t * D);
  }
}
}  // namespace avx2_attention
#pragma GCC pop_options

// q [B, H, 1, D] (any floating dtype), k and v [B, KV, S, D] float32 or bfloat16 with contiguous rows,
// mask [B, 1, 1, S] bool or none: the attention output [B, H, 1, D] in q's dtype.
torch::Tensor decode_attention(torch::Tensor q, torch::Tensor k, torch::Tensor v, std::optional<torch::Tensor> mask,
                               double scale, std::optional<double> softcap) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4 && q.size(2) == 1, "q [B, H, 1, D], k and v [B, KV, S, D] expected");
  const int64_t B = q.size(0), H = q.size(1), D = q.size(3), KV = k.size(1), S = k.size(2);
  TORCH_CHECK(k.sizes() == v.sizes() && k.size(0) == B && k.size(3) == D && KV > 0 && H % KV == 0,
              "k and v must be [B, KV, S, D] with H a multiple of KV");
  TORCH_CHECK(k.scalar_type() == v.scalar_type() && (k.scalar_type() == torch::kFloat32 || k.scalar_type() == torch::kBFloat16),
              "k and v must both be float32 or bfloat16");
  TORCH_CHECK(k.stride(3) == 1 && k.stride(2) == D && v.stride(3) == 1 && v.stride(2) == D, "k and v rows must be contiguous");
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "CPU tensors expected");
  TORCH_CHECK(has("avx2"), "this CPU lacks avx2");
  torch::Tensor allowed;
  if (mask) {
    TORCH_CHECK(mask->scalar_type() == torch::kBool && mask->numel() == B * S, "mask [B, 1, 1, S] bool expected");
    allowed = mask->reshape({B, S}).contiguous();
  }
  const auto q32 = q.to(torch::kFloat32).contiguous();
  auto out = torch::empty({B, H, 1, D}, q.options().dtype(torch::kFloat32));
  const float cap = softcap ? float(*softcap) : 0.f;
  const bool* m = mask ? allowed.data_ptr<bool>() : nullptr;
  at::parallel_for(0, B * H, 1, [&](int64_t t0, int64_t t1) {
    if (k.scalar_type() == torch::kFloat32)
      avx2_attention::heads(q32.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(), m, out.data_ptr<float>(), B, H,
                            KV, S, D, k.stride(0), k.stride(1), v.stride(0), v.stride(1), float(scale), cap, t0, t1);
    else
      avx2_attention::heads(q32.data_ptr<float>(), reinterpret_cast<const uint16_t*>(k.data_ptr()),
                            reinterpret_cast<const uint16_t*>(v.data_ptr()), m, out.data_ptr<float>(), B, H, KV, S, D,
                            k.stride(0), k.stride(1), v.stride(0), v.stride(1), float(scale), cap, t0, t1);
  });
  return out.to(q.scalar_type());
}

// ---- A decode step's elementwise work ------------------------------------------------------------
// The norms, the output soft-cap and the greedy choice each cost PyTorch several operators (or, for
// argmax over a 257216-token vocabulary, 0.7 ms on one row); here each is one pass in one call.
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2_rows {
// Gemma's RMSNorm of each row of x [R, D]: x * rsqrt(mean(x^2) + eps) * (1 + w), in float32, rounded
// once to T (float32 or bfloat16) into out.
template <typename T>
void rms_rows(const T* x, const float* w, T* out, int64_t D, float eps, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* row = x + r * D;
    __m256 a = _mm256_setzero_ps();
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
      const __m256 v = avx2::load8(row + d);
      a = _mm256_fmadd_ps(v, v, a);
    }
    float ss = avx2::hsum(a);
    for (; d < D; ++d) ss += to_float(row[d]) * to_float(row[d]);
    const float inv = 1.f / std::sqrt(ss / float(D) + eps);
    for (d = 0; d < D; ++d) {
      const float v = to_float(row[d]) * inv * (1.f + w[d]);
      if constexpr (std::is_same<T, float>::value) out[r * D + d] = v; else out[r * D + d] = float_to_bf16(v);
    }
  }
}
// The index of the largest value of each row of x [R, V] (the first, on ties); a row holding NaN gets
// -1, for the caller to hand to PyTorch's argmax, which picks the NaN.
void argmax_rows(const float* x, int64_t V, int64_t* out, int64_t r0, int64_t r1) {
  for (int64_t r = r0; r < r1; ++r) {
    const float* row = x + r * V;
    __m256 top = _mm256_set1_ps(-INFINITY), nan = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= V; i += 8) {
      const __m256 v = _mm256_loadu_ps(row + i);
      top = _mm256_max_ps(top, v);
      nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    }
    alignas(32) float lanes[8];
    _mm256_store_ps(lanes, top);
    float best = *std::max_element(lanes, lanes + 8);
    bool any_nan = _mm256_movemask_ps(nan) != 0;
    for (; i < V; ++i) {
      any_nan |= std::isnan(row[i]);
      best = std::max(best, row[i]);
    }
    int64_t at = -1;
    if (!any_nan)
      for (i = 0; i < V; ++i)
        if (row[i] == best) {
          at = i;
          break;
        }
    out[r] = at;
  }
}
}  // namespace avx2_rows
#pragma GCC pop_options

// Gemma's RMSNorm over the last dimension of x (float32 or bfloat16), weight [D] stored as w (1 + w
// scales): the result in x's dtype.
torch::Tensor rms_norm(torch::Tensor x, torch::Tensor weight, double eps) {
  TORCH_CHECK(x.device().is_cpu() && (x.scalar_type() == torch::kFloat32 || x.scalar_type() == torch::kBFloat16),
              "float32 or bfloat16 CPU x expected");
  const int64_t D = x.size(-1), R = x.numel() / std::max<int64_t>(D, 1);
  TORCH_CHECK(weight.numel() == D, "weight [D] expected");
  TORCH_CHECK(has("avx2"), "this CPU lacks avx2");
  x = x.contiguous();
  const auto w = weight.to(torch::kFloat32).contiguous();
  auto out = torch::empty_like(x);
  const float e = float(eps);
  at::parallel_for(0, R, std::max<int64_t>(1, 65536 / std::max<int64_t>(D, 1)), [&](int64_t r0, int64_t r1) {
    if (x.scalar_type() == torch::kFloat32)
      avx2_rows::rms_rows(x.data_ptr<float>(), w.data_ptr<float>(), out.data_ptr<float>(), D, e, r0, r1);
    else
      avx2_rows::rms_rows(reinterpret_cast<const uint16_t*>(x.data_ptr()), w.data_ptr<float>(),
                          reinterpret_cast<uint16_t*>(out.data_ptr()), D, e, r0, r1);
  });
  return out;
}

// cap * tanh(x / cap) elementwise, computed in float32 and returned in x's dtype.
torch::Tensor softcap(torch::Tensor x, double cap) {
  TORCH_CHECK(x.device().is_cpu() && x.is_floating_point(), "floating CPU x expected");
  TORCH_CHECK(cap > 0, "cap must be positive");
  TORCH_CHECK(has("avx2"), "this CPU lacks avx2");
  const auto x32 = x.to(torch::kFloat32).contiguous();
  auto out = torch::empty_like(x32);
  const float* i = x32.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, out.numel(), 16384, [&](int64_t a, int64_t b) { avx2_math::softcap(i + a, o + a, b - a, float(cap)); });
  return out.to(x.scalar_type());
}

// Gemma's gated GELU: gelu_tanh(gate) * up elementwise, in float32, returned in gate's dtype.
torch::Tensor gelu_mul(torch::Tensor gate, torch::Tensor up) {
  TORCH_CHECK(gate.device().is_cpu() && gate.sizes() == up.sizes() && gate.is_floating_point() && up.is_floating_point(),
              "floating CPU gate and up of one shape expected");
  TORCH_CHECK(has("avx2"), "this CPU lacks avx2");
  const auto g32 = gate.to(torch::kFloat32).contiguous(), u32 = up.to(torch::kFloat32).contiguous();
  auto out = torch::empty_like(g32);
  const float *g = g32.data_ptr<float>(), *u = u32.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, out.numel(), 16384, [&](int64_t a, int64_t b) { avx2_math::gelu_mul(g + a, u + a, o + a, b - a); });
  return out.to(gate.scalar_type());
}

// The first index of each row's largest value, x [R, V] float32 (-1 for a row holding NaN).
torch::Tensor argmax_rows(torch::Tensor x) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.size(1) > 0,
              "float32 CPU x [R, V] expected");
  TORCH_CHECK(has("avx2"), "this CPU lacks avx2");
  x = x.contiguous();
  auto out = torch::empty({x.size(0)}, x.options().dtype(torch::kLong));
  at::parallel_for(0, x.size(0), 1, [&](int64_t r0, int64_t r1) {
    avx2_rows::argmax_rows(x.data_ptr<float>(), x.size(1), out.data_ptr<int64_t>(), r0, r1);
  });
  return out;
}

std::vector<std::string> paths() {
  std::vector<std::string> found;
  for (const char* name : {"avx2", "avx512", "avx512bf16", "avx512vnni", "avxvnni"})
    if (has(name)) found.emplace_back(name);
  return found;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("paths", &paths, "instruction-set paths this CPU runs");
  m.def("linear", &linear, "x times a weight on the named path, plus bias, in float32 or x's dtype");
  m.def("generic", &generic, "float32 x times float32/bfloat16/int8 weight (AVX2 or AVX-512)");
  m.def("bf16", &bf16, "bfloat16 x times bfloat16 weight (AVX-512 BF16)");
  m.def("int8_vnni", &int8_vnni, "float32 x quantized per block of 32 times int8 weight (VNNI)");
  m.def("int8_avx2", &int8_avx2, "float32 x quantized per block of 32 times int8 weight (AVX2)");
  m.def("int4", &int4, "float32 x quantized per block of 32 times int4 tiles (VNNI or AVX2)");
  m.def("dequantize_int8", &dequantize_int8, "rows of an int8 weight times their scales, into out");
  m.def("decode_attention", &decode_attention, "one query per row against a cache: softmax(q k * scale, capped, masked) v");
  m.def("rms_norm", &rms_norm, "Gemma's RMSNorm over the last dimension, (1 + weight) scales, in float32");
  m.def("softcap", &softcap, "cap * tanh(x / cap) in float32, returned in x's dtype");
  m.def("gelu_mul", &gelu_mul, "gelu_tanh(gate) * up in float32, returned in gate's dtype");
  m.def("argmax_rows", &argmax_rows, "first index of each row's largest value (-1 where a row holds NaN)");
  m.def("dequantize_int4", &dequantize_int4, "rows of an int4 weight (tiles), into out");
}

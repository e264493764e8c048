// AVX2 helpers (8 float lanes; 16 with AVX-512) shared by the buffers path (draft_in_buffers.cpp) and the attention of rows
// (rows_attention.cpp): every CPU with the 8-bit dot products has AVX2 and FMA.
#pragma once
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <immintrin.h>

#define SELFSPEC_AVX2 __attribute__((target("avx2,fma")))
#define SELFSPEC_AVX2_F16C __attribute__((target("avx2,fma,f16c")))
#define SELFSPEC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define SELFSPEC_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))

namespace selfspec_lanes {

constexpr int64_t kLanes = 8;

SELFSPEC_AVX2 inline __m256 load_lanes(const float* p) { return _mm256_loadu_ps(p); }
SELFSPEC_AVX2 inline __m256 load_lanes(const c10::BFloat16* p) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}
SELFSPEC_AVX2_F16C inline __m256 load_lanes(const c10::Half* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// The same, 16 lanes (AVX-512).
constexpr int64_t kWideLanes = 16;
SELFSPEC_AVX512 inline __m512 load_wide(const float* p) { return _mm512_loadu_ps(p); }
SELFSPEC_AVX512 inline __m512 load_wide(const c10::BFloat16* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16));
}
SELFSPEC_AVX512 inline __m512 load_wide(const c10::Half* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

SELFSPEC_AVX2 inline float lane_sum(__m256 v) {
  const __m128 halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
}

// e^x for |x| <= 87 (softmax after its maximum is taken off; silu): 2^n 2^f, 2^f by its Taylor series to f^6 on
// |f| <= 1/2 (relative error below 1e-7), 2^n built in the exponent bits (|n| <= 126; e^-87 is zero enough).
constexpr float kExpLimit = 87.f, kLog2E = 1.4426950409f;
constexpr float kExp2Series[] = {1.5403530e-4f, 1.3333558e-3f, 9.6181291e-3f, 5.5504109e-2f, 2.4022651e-1f,
                                 6.9314718e-1f, 1.f};  // highest power first

SELFSPEC_AVX2 inline __m256 exp_lanes(__m256 x) {
  const __m256 clamped = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-kExpLimit)), _mm256_set1_ps(kExpLimit));
  const __m256 t = _mm256_mul_ps(clamped, _mm256_set1_ps(kLog2E));
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, n);
  __m256 p = _mm256_set1_ps(kExp2Series[0]);
  for (int i = 1; i < 7; ++i) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(kExp2Series[i]));
  const __m256i power = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(power));
}

// exp_lanes with 16 lanes.
SELFSPEC_AVX512 inline __m512 exp_wide(__m512 x) {
  const __m512 clamped = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-kExpLimit)), _mm512_set1_ps(kExpLimit));
  const __m512 t = _mm512_mul_ps(clamped, _mm512_set1_ps(kLog2E));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_sub_ps(t, n);
  __m512 p = _mm512_set1_ps(kExp2Series[0]);
  for (int i = 1; i < 7; ++i) p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kExp2Series[i]));
  const __m512i power = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(p, _mm512_castsi512_ps(power));
}

}  // namespace selfspec_lanes

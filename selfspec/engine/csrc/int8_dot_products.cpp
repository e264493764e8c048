// Low-bit products that run at memory speed on CPUs with 8-bit dot-product instructions (AVX512-VNNI): each
// group of 32 activations is rounded to int8 with a scale of its own (as llama.cpp's Q8 blocks), and the weights'
// 4- or 8-bit values multiply them as unsigned bytes, 64 products an instruction. torch's
// _weight_int4pack_mm_for_cpu widens every weight to floating point instead, which makes a draft token's products
// compute-bound on a small CPU (docs/BENCHMARKS.md). The rounding of the activations only moves a draft's
// proposals: the full model verifies them.
//
// int4 layout (lowbit.pack_int4_for_int8_dot): blocks of 16 output rows; per block and group of 32 inputs, four
// 64-byte chunks, one per 8 inputs, where bytes 4r..4r+3 hold row r's inputs 0..3 of the chunk in their low
// nibbles and inputs 4..7 in their high nibbles, so one instruction serves 16 rows at once. Per block and group,
// 16 scale codes (unsigned bytes) then 16 zero codes (signed bytes), each times its row's step: per block, ahead of
// its groups' codes, 16 scale steps then 16 zero steps in float32 (a draft token streams every weight and scale once,
// and float16 pairs a group were a fifth of its bytes): weight = (q - 8) * code * step + zero code * zero step. int8 layout: see int8_block_product. int2 layout (pack_int2_for_int8_dot, a
// draft head's screen): per block and group, two 64-byte chunks of 16 inputs, row r's bytes 4r..4r+3 each holding
// four inputs two bits apart (chunk c, byte b, bits 2s: input 16c + 4s + b); then 16 scales and 16 lows in float16:
// weight = q * scale + low.
#include "products.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cmath>
#include <vector>

#define SELFSPEC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define SELFSPEC_AVX2 __attribute__((target("avx2,fma,f16c")))

namespace {

constexpr int64_t kGroup = 32, kBlock = 16, kGroupBytes = kGroup * kBlock / 2, kInt8GroupBytes = kGroup * kBlock;
constexpr int64_t kInt2GroupBytes = kGroup * kBlock / 4;
constexpr int64_t kCodeSteps = 2 * kBlock * 4, kGroupCodes = 2 * kBlock;  // int4: a block's float32 steps; a group's codes
constexpr int32_t kInt4Offset = 8, kInt8Offset = 128;  // the weights are stored as unsigned values plus these
// Weights asked for this far ahead of their use: the hardware's own prefetcher ramps up too slowly over the few
// hundred kilobytes of one product.
constexpr int64_t kPrefetchBytes = 2048;

// The activations, each group of 32 rounded to int8 against its largest magnitude.
struct RoundedRows {
  std::vector<int8_t> values;  // (rows, in)
  std::vector<float> scale;    // (rows, groups): value = int8 * scale
  std::vector<float> sum;      // (rows, groups): the sum of the group's activations as they were
  std::vector<int32_t> total;  // (rows, groups): the sum of the group's int8 values (for the weights' offset)
};

// (AVX2, which every CPU with these products has: a scalar rounding call per activation cost a draft token
// ~0.2 ms. The conversion rounds to nearest, ties to even, as std::nearbyint does.)
template <typename Scalar>
SELFSPEC_AVX2 RoundedRows rounded_rows(const Scalar* data, int64_t numel) {
  const int64_t count = numel / kGroup;
  RoundedRows rows{std::vector<int8_t>(numel), std::vector<float>(count), std::vector<float>(count),
                   std::vector<int32_t>(count)};
  float v[kGroup];
  int32_t rounded[8];
  for (int64_t group = 0; group < count; ++group) {
    float largest = 0.f, sum = 0.f;
    for (int64_t j = 0; j < kGroup; ++j) {
      v[j] = static_cast<float>(data[group * kGroup + j]);
      largest = std::max(largest, std::fabs(v[j])), sum += v[j];
    }
    const __m256 inverse = _mm256_set1_ps(largest > 0.f ? 127.f / largest : 0.f);
    __m256i totals = _mm256_setzero_si256();
    for (int64_t j = 0; j < kGroup; j += 8) {
      const __m256i values = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(v + j), inverse));
      totals = _mm256_add_epi32(totals, values);
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(rounded), values);
      for (int k = 0; k < 8; ++k) rows.values[group * kGroup + j + k] = static_cast<int8_t>(rounded[k]);
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(rounded), totals);
    int32_t total = 0;
    for (int k = 0; k < 8; ++k) total += rounded[k];
    rows.scale[group] = largest / 127.f, rows.sum[group] = sum, rows.total[group] = total;
  }
  return rows;
}

template <typename Scalar>
SELFSPEC_AVX512 void store_block(__m512 sums, Scalar* out) {
  float values[kBlock];
  _mm512_storeu_ps(values, sums);
  for (int64_t r = 0; r < kBlock; ++r) out[r] = static_cast<Scalar>(values[r]);
}

// 16 (or 8) float16 values widened to float32.
SELFSPEC_AVX512 inline __m512 halves16(const uint16_t* values) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(values)));
}
SELFSPEC_AVX2 inline __m256 halves8(const uint16_t* values) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(values)));
}

// 16 (or 8) bytes as floats: unsigned scale codes, signed zero codes.
SELFSPEC_AVX512 inline __m512 unsigned_codes16(const uint8_t* codes) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes))));
}
SELFSPEC_AVX512 inline __m512 signed_codes16(const uint8_t* codes) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes))));
}
SELFSPEC_AVX2 inline __m256 unsigned_codes8(const uint8_t* codes) {
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes))));
}
SELFSPEC_AVX2 inline __m256 signed_codes8(const uint8_t* codes) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes))));
}

// Every row of x against one block of 16 output rows: out[m, 16 block .. 16 block + 15].
template <typename Scalar>
SELFSPEC_AVX512 void block_product(const uint8_t* packed, const uint8_t* codes, const RoundedRows& x, int64_t rows,
                   int64_t groups, int64_t block, Scalar* out, int64_t out_features) {
  const __m512i low_nibbles = _mm512_set1_epi8(0x0F);
  const uint8_t* block_weights = packed + block * groups * kGroupBytes;
  const uint8_t* block_codes = codes + block * (kCodeSteps + groups * kGroupCodes);
  const __m512 scale_step = _mm512_loadu_ps(reinterpret_cast<const float*>(block_codes));
  const __m512 zero_step = _mm512_loadu_ps(reinterpret_cast<const float*>(block_codes) + kBlock);
  block_codes += kCodeSteps;
  for (int64_t m = 0; m < rows; ++m) {  // the block's weights stay in L1 from the second row on
    const int32_t* words = reinterpret_cast<const int32_t*>(x.values.data() + m * groups * kGroup);
    __m512 scaled = _mm512_setzero_ps(), zeros = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t* w = block_weights + g * kGroupBytes;
      const int32_t* a = words + g * (kGroup / 4);  // four int8 activations a word
      __m512i low = _mm512_setzero_si512(), high = _mm512_setzero_si512();
      for (int c = 0; c < 4; ++c) _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes + 64 * c), _MM_HINT_T0);
      for (int c = 0; c < 4; ++c) {
        const __m512i chunk = _mm512_loadu_si512(w + 64 * c);
        low = _mm512_dpbusd_epi32(low, _mm512_and_si512(chunk, low_nibbles), _mm512_set1_epi32(a[2 * c]));
        high = _mm512_dpbusd_epi32(high, _mm512_and_si512(_mm512_srli_epi16(chunk, 4), low_nibbles),
                                   _mm512_set1_epi32(a[2 * c + 1]));
      }
      const int64_t at = m * groups + g;
      const __m512i dot = _mm512_sub_epi32(_mm512_add_epi32(low, high), _mm512_set1_epi32(kInt4Offset * x.total[at]));
      const uint8_t* group_codes = block_codes + g * kGroupCodes;
      const __m512 scale = _mm512_mul_ps(_mm512_mul_ps(unsigned_codes16(group_codes), scale_step), _mm512_set1_ps(x.scale[at]));
      const __m512 zero = _mm512_mul_ps(signed_codes16(group_codes + kBlock), zero_step);
      scaled = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(dot), scaled);
      zeros = _mm512_fmadd_ps(zero, _mm512_set1_ps(x.sum[at]), zeros);
    }
    store_block(_mm512_add_ps(scaled, zeros), out + m * out_features + block * kBlock);
  }
}

// The int8 weights' form of block_product: per group of 32 inputs, eight 64-byte chunks of 4 inputs, row r's
// bytes 4r..4r+3 holding its weights plus 128 (unsigned bytes, as the instruction takes them); one scale a row.
template <typename Scalar>
SELFSPEC_AVX512 void int8_block_product(const uint8_t* packed, const float* row_scales, const RoundedRows& x,
                                        int64_t rows, int64_t groups, int64_t block, Scalar* out, int64_t out_features) {
  const uint8_t* block_weights = packed + block * groups * kInt8GroupBytes;
  const __m512 scale = _mm512_loadu_ps(row_scales + block * kBlock);
  for (int64_t m = 0; m < rows; ++m) {
    const int32_t* words = reinterpret_cast<const int32_t*>(x.values.data() + m * groups * kGroup);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t* w = block_weights + g * kInt8GroupBytes;
      const int32_t* a = words + g * (kGroup / 4);
      for (int c = 0; c < 8; ++c) _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes + 64 * c), _MM_HINT_T0);
      __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
      for (int c = 0; c < 8; c += 2) {
        even = _mm512_dpbusd_epi32(even, _mm512_loadu_si512(w + 64 * c), _mm512_set1_epi32(a[c]));
        odd = _mm512_dpbusd_epi32(odd, _mm512_loadu_si512(w + 64 * (c + 1)), _mm512_set1_epi32(a[c + 1]));
      }
      const int64_t at = m * groups + g;
      const __m512i dot = _mm512_sub_epi32(_mm512_add_epi32(even, odd), _mm512_set1_epi32(kInt8Offset * x.total[at]));
      sum = _mm512_fmadd_ps(_mm512_set1_ps(x.scale[at]), _mm512_cvtepi32_ps(dot), sum);
    }
    store_block(_mm512_mul_ps(sum, scale), out + m * out_features + block * kBlock);
  }
}

// The int2 weights' form (a draft head's screen, screened_head.cpp): four inputs' weights two bits apart in each
// byte, and no offset to take off: weight = q * scale + low, the lows applied through the activations' group sums.
template <typename Scalar>
SELFSPEC_AVX512 void int2_block_product(const uint8_t* packed, const uint16_t* scales_and_lows, const RoundedRows& x,
                                        int64_t rows, int64_t groups, int64_t block, Scalar* out, int64_t out_features) {
  const __m512i crumbs = _mm512_set1_epi8(0x03);
  const uint8_t* block_weights = packed + block * groups * kInt2GroupBytes;
  const uint16_t* block_scales = scales_and_lows + block * groups * 2 * kBlock;
  for (int64_t m = 0; m < rows; ++m) {
    const int32_t* words = reinterpret_cast<const int32_t*>(x.values.data() + m * groups * kGroup);
    __m512 scaled = _mm512_setzero_ps(), lows = _mm512_setzero_ps();
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t* w = block_weights + g * kInt2GroupBytes;
      const int32_t* a = words + g * (kGroup / 4);
      for (int c = 0; c < 2; ++c) _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes + 64 * c), _MM_HINT_T0);
      __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
      for (int c = 0; c < 2; ++c) {
        const __m512i chunk = _mm512_loadu_si512(w + 64 * c);
        even = _mm512_dpbusd_epi32(even, _mm512_and_si512(chunk, crumbs), _mm512_set1_epi32(a[4 * c]));
        odd = _mm512_dpbusd_epi32(odd, _mm512_and_si512(_mm512_srli_epi16(chunk, 2), crumbs), _mm512_set1_epi32(a[4 * c + 1]));
        even = _mm512_dpbusd_epi32(even, _mm512_and_si512(_mm512_srli_epi16(chunk, 4), crumbs), _mm512_set1_epi32(a[4 * c + 2]));
        odd = _mm512_dpbusd_epi32(odd, _mm512_and_si512(_mm512_srli_epi16(chunk, 6), crumbs), _mm512_set1_epi32(a[4 * c + 3]));
      }
      const int64_t at = m * groups + g;
      const __m512 scale = _mm512_mul_ps(halves16(block_scales + g * 2 * kBlock), _mm512_set1_ps(x.scale[at]));
      scaled = _mm512_fmadd_ps(scale, _mm512_cvtepi32_ps(_mm512_add_epi32(even, odd)), scaled);
      lows = _mm512_fmadd_ps(halves16(block_scales + g * 2 * kBlock + kBlock), _mm512_set1_ps(x.sum[at]), lows);
    }
    store_block(_mm512_add_ps(scaled, lows), out + m * out_features + block * kBlock);
  }
}

// The same two products for CPUs with AVX2 but no 8-bit dot instruction (AMD Zen 2/3, older Intel): each
// 256-bit half of a 64-byte chunk holds 8 of the block's rows, and a pair of instructions (unsigned-by-signed
// byte products summed in pairs, then in fours) does what one dot instruction does.
SELFSPEC_AVX2 inline __m256i dot_fours(__m256i unsigned_bytes, __m256i signed_bytes) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(unsigned_bytes, signed_bytes), _mm256_set1_epi16(1));
}

template <typename Scalar>
SELFSPEC_AVX2 void store_halves(__m256 low, __m256 high, Scalar* out) {
  float values[kBlock];
  _mm256_storeu_ps(values, low);
  _mm256_storeu_ps(values + kBlock / 2, high);
  for (int64_t r = 0; r < kBlock; ++r) out[r] = static_cast<Scalar>(values[r]);
}

template <typename Scalar>
SELFSPEC_AVX2 void block_product_avx2(const uint8_t* packed, const uint8_t* codes, const RoundedRows& x,
                                      int64_t rows, int64_t groups, int64_t block, Scalar* out, int64_t out_features) {
  const __m256i low_nibbles = _mm256_set1_epi8(0x0F);
  const uint8_t* block_weights = packed + block * groups * kGroupBytes;
  const uint8_t* block_codes = codes + block * (kCodeSteps + groups * kGroupCodes);
  const float* steps = reinterpret_cast<const float*>(block_codes);
  const __m256 scale_steps[2] = {_mm256_loadu_ps(steps), _mm256_loadu_ps(steps + 8)};
  const __m256 zero_steps[2] = {_mm256_loadu_ps(steps + kBlock), _mm256_loadu_ps(steps + kBlock + 8)};
  block_codes += kCodeSteps;
  for (int64_t m = 0; m < rows; ++m) {
    const int32_t* words = reinterpret_cast<const int32_t*>(x.values.data() + m * groups * kGroup);
    __m256 sums[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t* w = block_weights + g * kGroupBytes;
      const int32_t* a = words + g * (kGroup / 4);
      const int64_t at = m * groups + g;
      for (int half = 0; half < 2; ++half) {
        __m256i dot = _mm256_set1_epi32(-kInt4Offset * x.total[at]);
        for (int c = 0; c < 4; ++c) {
          const __m256i chunk = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * c + 32 * half));
          dot = _mm256_add_epi32(dot, dot_fours(_mm256_and_si256(chunk, low_nibbles), _mm256_set1_epi32(a[2 * c])));
          dot = _mm256_add_epi32(dot, dot_fours(_mm256_and_si256(_mm256_srli_epi16(chunk, 4), low_nibbles),
                                                _mm256_set1_epi32(a[2 * c + 1])));
        }
        const uint8_t* group_codes = block_codes + g * kGroupCodes + 8 * half;
        const __m256 scale = _mm256_mul_ps(unsigned_codes8(group_codes), scale_steps[half]);
        sums[half] = _mm256_fmadd_ps(_mm256_mul_ps(scale, _mm256_set1_ps(x.scale[at])), _mm256_cvtepi32_ps(dot), sums[half]);
        sums[half] = _mm256_fmadd_ps(_mm256_mul_ps(signed_codes8(group_codes + kBlock), zero_steps[half]),
                                     _mm256_set1_ps(x.sum[at]), sums[half]);
      }
    }
    store_halves(sums[0], sums[1], out + m * out_features + block * kBlock);
  }
}

// int8 weights: the stored byte less 128 is the signed weight; its magnitude times the activation signed by it
// keeps every pair's sum within 16 bits, which the unsigned-by-signed instruction needs.
template <typename Scalar>
SELFSPEC_AVX2 void int8_block_product_avx2(const uint8_t* packed, const float* row_scales, const RoundedRows& x,
                                           int64_t rows, int64_t groups, int64_t block, Scalar* out,
                                           int64_t out_features) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const uint8_t* block_weights = packed + block * groups * kInt8GroupBytes;
  for (int64_t m = 0; m < rows; ++m) {
    const int32_t* words = reinterpret_cast<const int32_t*>(x.values.data() + m * groups * kGroup);
    __m256 sums[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t* w = block_weights + g * kInt8GroupBytes;
      const int32_t* a = words + g * (kGroup / 4);
      const int64_t at = m * groups + g;
      for (int half = 0; half < 2; ++half) {
        __m256i dot = _mm256_setzero_si256();
        for (int c = 0; c < 8; ++c) {
          const __m256i weights = _mm256_xor_si256(
              _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * c + 32 * half)), flip);
          const __m256i activations = _mm256_sign_epi8(_mm256_set1_epi32(a[c]), weights);
          dot = _mm256_add_epi32(dot, dot_fours(_mm256_abs_epi8(weights), activations));
        }
        sums[half] = _mm256_fmadd_ps(_mm256_set1_ps(x.scale[at]), _mm256_cvtepi32_ps(dot), sums[half]);
      }
    }
    const float* scale = row_scales + block * kBlock;
    store_halves(_mm256_mul_ps(sums[0], _mm256_loadu_ps(scale)), _mm256_mul_ps(sums[1], _mm256_loadu_ps(scale + 8)),
                 out + m * out_features + block * kBlock);
  }
}

template <typename Scalar>
SELFSPEC_AVX2 void int2_block_product_avx2(const uint8_t* packed, const uint16_t* scales_and_lows, const RoundedRows& x,
                                           int64_t rows, int64_t groups, int64_t block, Scalar* out,
                                           int64_t out_features) {
  const __m256i crumbs = _mm256_set1_epi8(0x03);
  const uint8_t* block_weights = packed + block * groups * kInt2GroupBytes;
  const uint16_t* block_scales = scales_and_lows + block * groups * 2 * kBlock;
  for (int64_t m = 0; m < rows; ++m) {
    const int32_t* words = reinterpret_cast<const int32_t*>(x.values.data() + m * groups * kGroup);
    __m256 sums[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t g = 0; g < groups; ++g) {
      const uint8_t* w = block_weights + g * kInt2GroupBytes;
      const int32_t* a = words + g * (kGroup / 4);
      const int64_t at = m * groups + g;
      for (int half = 0; half < 2; ++half) {
        __m256i dot = _mm256_setzero_si256();
        for (int c = 0; c < 2; ++c) {
          const __m256i chunk = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 64 * c + 32 * half));
          for (int shift = 0; shift < 4; ++shift) {
            const __m256i weights = _mm256_and_si256(_mm256_srli_epi16(chunk, 2 * shift), crumbs);
            dot = _mm256_add_epi32(dot, dot_fours(weights, _mm256_set1_epi32(a[4 * c + shift])));
          }
        }
        const uint16_t* scale = block_scales + g * 2 * kBlock + 8 * half;
        sums[half] = _mm256_fmadd_ps(_mm256_mul_ps(halves8(scale), _mm256_set1_ps(x.scale[at])),
                                     _mm256_cvtepi32_ps(dot), sums[half]);
        sums[half] = _mm256_fmadd_ps(halves8(scale + kBlock), _mm256_set1_ps(x.sum[at]), sums[half]);
      }
    }
    store_halves(sums[0], sums[1], out + m * out_features + block * kBlock);
  }
}

bool has_instructions(int64_t kind) {
  if (kind == kInt4Int8Dot || kind == kInt8Int8Dot || kind == kInt2Int8Dot) {
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
  }
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

// int2 weights carry a float16 scale and low per group; int8 weights a float32 scale a row; int4 weights byte codes
// per group and float16 steps per block.
bool per_group_scales(int64_t kind) { return kind == kInt2Int8Dot || kind == kInt2Int8DotAvx2; }
bool coded_scales(int64_t kind) { return kind == kInt4Int8Dot || kind == kInt4Int8DotAvx2; }

int64_t group_bytes(int64_t kind) {
  if (kind == kInt2Int8Dot || kind == kInt2Int8DotAvx2) return kInt2GroupBytes;
  return kind == kInt4Int8Dot || kind == kInt4Int8DotAvx2 ? kGroupBytes : kInt8GroupBytes;
}

}  // namespace

void check_int8_dot(int64_t kind, const at::Tensor& packed, const at::Tensor& scales, int64_t in_features) {
  TORCH_CHECK(kind >= kInt4Int8Dot && kind <= kInt2Int8DotAvx2, "no 8-bit dot product of kind ", kind);
  TORCH_CHECK(has_instructions(kind), "this CPU lacks the instructions of 8-bit dot product kind ", kind,
              kind == kInt4Int8Dot || kind == kInt8Int8Dot || kind == kInt2Int8Dot ? " (AVX512-VNNI)" : " (AVX2)");
  const auto scale_type = coded_scales(kind) ? at::kByte : per_group_scales(kind) ? at::kHalf : at::kFloat;
  TORCH_CHECK(packed.dim() == 3 && packed.size(2) == group_bytes(kind) && packed.is_contiguous() &&
                  packed.scalar_type() == at::kByte && scales.is_contiguous() && scales.scalar_type() == scale_type &&
                  (!coded_scales(kind) || (scales.dim() == 2 && scales.size(0) == packed.size(0) &&
                                           scales.size(1) == kCodeSteps + packed.size(1) * kGroupCodes)),
              "weights packed by lowbit.pack_int4_for_int8_dot, pack_int8_for_int8_dot or pack_int2_for_int8_dot");
  TORCH_CHECK(in_features == packed.size(1) * kGroup, "the input has ", in_features, " features; the weights take ",
              packed.size(1) * kGroup);
}

namespace {

template <typename Scalar>
void int8_dot(int64_t kind, const Scalar* x, int64_t rows, const at::Tensor& packed, const at::Tensor& scales,
              Scalar* out) {
  const int64_t blocks = packed.size(0), groups = packed.size(1);
  const RoundedRows rounded = rounded_rows(x, rows * groups * kGroup);
  const uint8_t* weights = packed.data_ptr<uint8_t>();
  const bool halves_given = per_group_scales(kind), codes_given = coded_scales(kind);
  const uint16_t* halves = halves_given ? reinterpret_cast<const uint16_t*>(scales.data_ptr<at::Half>()) : nullptr;
  const uint8_t* codes = codes_given ? scales.data_ptr<uint8_t>() : nullptr;
  const float* scale = halves_given || codes_given ? nullptr : scales.data_ptr<float>();
  at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      switch (kind) {
        case kInt4Int8Dot: block_product(weights, codes, rounded, rows, groups, block, out, blocks * kBlock); break;
        case kInt8Int8Dot: int8_block_product(weights, scale, rounded, rows, groups, block, out, blocks * kBlock); break;
        case kInt4Int8DotAvx2:
          block_product_avx2(weights, codes, rounded, rows, groups, block, out, blocks * kBlock);
          break;
        case kInt2Int8Dot: int2_block_product(weights, halves, rounded, rows, groups, block, out, blocks * kBlock); break;
        case kInt2Int8DotAvx2:
          int2_block_product_avx2(weights, halves, rounded, rows, groups, block, out, blocks * kBlock);
          break;
        default: int8_block_product_avx2(weights, scale, rounded, rows, groups, block, out, blocks * kBlock);
      }
    }
  });
}

}  // namespace

void int8_dot_rows(int64_t kind, const float* x, int64_t rows, const at::Tensor& packed, const at::Tensor& scales,
                   float* out) {
  int8_dot(kind, x, rows, packed, scales, out);
}

at::Tensor int8_dot_mm(int64_t kind, const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales) {
  TORCH_CHECK(x.dim() == 2, "rows of activations");
  check_int8_dot(kind, packed, scales, x.size(1));
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty({x.size(0), packed.size(0) * kBlock}, input.options());
  if (x.size(0) == 0) return out;
  if (input.scalar_type() == at::kFloat) {
    int8_dot(kind, input.data_ptr<float>(), x.size(0), packed, scales, out.data_ptr<float>());
  } else {
    TORCH_CHECK(input.scalar_type() == at::kBFloat16, "float32 or bfloat16 activations");
    int8_dot(kind, input.data_ptr<c10::BFloat16>(), x.size(0), packed, scales, out.data_ptr<c10::BFloat16>());
  }
  return out;
}

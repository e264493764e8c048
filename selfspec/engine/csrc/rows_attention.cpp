// Attention of a forward's few rows over a static cache layer, each row over exactly the positions up to its own, in
// an order that depends on nothing else. sdpa's sums over a row's keys are grouped by how many keys and queries the
// call holds, so a verification's row and the one-token step at its position can round differently: in bfloat16
// often enough to change a greedy token. Here a verification's rows are, bit for bit, the steps that would have run
// one by one (tests/test_native_layers.py). Softmax in float32 throughout.
//
// A row's positions are taken in segments of kSegment counted from position 0. One task scores a segment for one
// group of query heads and every row that reaches it (the segment's keys read once for all of them), then makes each
// row's softmax sums and weighted values over it; each row's segments are merged in order afterwards. A score is a
// function of its query and key alone, and a row's sums are grouped by its own length alone -- not by the other rows,
// nor by the threads, which share the tasks.
#include "rows_attention.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "avx2_lanes.h"

using namespace selfspec_lanes;

namespace {

constexpr int64_t kSegment = 64;
constexpr int64_t kBlockPositions = 16;  // the AVX-512 scores come 16 positions at a time

// Scores q . k * scaling of `lines` query rows (lines[i], head_dim floats) over positions [begin, end) (keys
// `head_dim` apart): scores[i * stride + p - begin], 8 lanes a step.
template <typename Scalar>
SELFSPEC_AVX2 void scores_avx2(const float* const* lines, int64_t count_lines, const Scalar* keys, int64_t begin,
                               int64_t end, int64_t head_dim, float scaling, float* scores, int64_t stride) {
  const int64_t chunks = head_dim / kLanes;
  for (int64_t p = begin; p < end; ++p) {
    const Scalar* key = keys + p * head_dim;
    for (int64_t i = 0; i < count_lines; ++i) {
      __m256 dot = _mm256_setzero_ps();
      for (int64_t c = 0; c < chunks; ++c) {
        dot = _mm256_fmadd_ps(_mm256_loadu_ps(lines[i] + c * kLanes), load_lanes(key + c * kLanes), dot);
      }
      scores[i * stride + p - begin] = lane_sum(dot) * scaling;
    }
  }
}

// Lane j of the result: the sum of v[j]'s 16 lanes (a transpose by unpacks and 128-bit shuffles, adding as it goes),
// in the same order for every j.
SELFSPEC_AVX512 inline __m512 sum16(const __m512* v) {
  __m512 pairs[8], quads[4];
  // (-O2 keeps arrays in memory unless their loops unroll whole: hence the pragmas.)
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // per 128-bit lane l: v[4i .. 4i + 3]'s four lanes of l, summed
    const __m512d low = _mm512_unpacklo_pd(_mm512_castps_pd(pairs[2 * i]), _mm512_castps_pd(pairs[2 * i + 1]));
    const __m512d high = _mm512_unpackhi_pd(_mm512_castps_pd(pairs[2 * i]), _mm512_castps_pd(pairs[2 * i + 1]));
    quads[i] = _mm512_add_ps(_mm512_castpd_ps(low), _mm512_castpd_ps(high));
  }
  const __m512 t0 = _mm512_shuffle_f32x4(quads[0], quads[1], 0x44), t1 = _mm512_shuffle_f32x4(quads[0], quads[1], 0xEE);
  const __m512 t2 = _mm512_shuffle_f32x4(quads[2], quads[3], 0x44), t3 = _mm512_shuffle_f32x4(quads[2], quads[3], 0xEE);
  return _mm512_add_ps(_mm512_add_ps(_mm512_shuffle_f32x4(t0, t2, 0x88), _mm512_shuffle_f32x4(t0, t2, 0xDD)),
                       _mm512_add_ps(_mm512_shuffle_f32x4(t1, t3, 0x88), _mm512_shuffle_f32x4(t1, t3, 0xDD)));
}

// The first `valid` of a block's 16 scores (sum16 of its dot products' lanes, scaled), the rest left alone.
SELFSPEC_AVX512 inline void store_block(const __m512* dots, int64_t valid, float scaling, float* scores) {
  const __m512 block = _mm512_mul_ps(sum16(dots), _mm512_set1_ps(scaling));
  _mm512_mask_storeu_ps(scores, static_cast<__mmask16>((1u << valid) - 1u), block);
}

// scores_avx2 with 16 lanes: per block of 16 positions, the keys widened to float32 once for every line, and each
// line's 16 dot products' lanes summed together (sum16). `Chunks` 16-wide chunks a head (0: read at run time; 4 and 8,
// the usual 64- and 128-wide heads, known when compiling so that the loops unroll).
template <int Chunks, typename Scalar>
SELFSPEC_AVX512 void widened_scores(const float* const* lines, int64_t count_lines, const Scalar* keys, int64_t begin,
                                    int64_t end, int64_t head_dim, float scaling, float* scores, int64_t stride) {
  const int64_t chunks = Chunks > 0 ? Chunks : head_dim / kWideLanes;
  float widened[kBlockPositions * 512];  // a block's keys as float32 (heads are at most 512 wide), zeros past its end
  for (int64_t first = begin; first < end; first += kBlockPositions) {
    const int64_t valid = std::min(kBlockPositions, end - first);
    for (int64_t j = 0; j < kBlockPositions; ++j) {
      for (int64_t c = 0; c < chunks; ++c) {
        _mm512_storeu_ps(widened + j * head_dim + c * kWideLanes,
                         j < valid ? load_wide(keys + (first + j) * head_dim + c * kWideLanes) : _mm512_setzero_ps());
      }
    }
    for (int64_t i = 0; i < count_lines; ++i) {
      const float* query = lines[i];
      __m512 dots[kBlockPositions];
#pragma GCC unroll 16
      for (int64_t j = 0; j < kBlockPositions; ++j) {  // each dot product in a register
        __m512 dot = _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int64_t c = 0; c < chunks; ++c) {
          dot = _mm512_fmadd_ps(_mm512_loadu_ps(query + c * kWideLanes), _mm512_loadu_ps(widened + j * head_dim + c * kWideLanes), dot);
        }
        dots[j] = dot;
      }
      store_block(dots, valid, scaling, scores + i * stride + first - begin);
    }
  }
}

// widened_scores for a bfloat16 cache on a CPU with AVX512-BF16: the queries rounded to bfloat16 (`lines`, head_dim
// each), and each dot product made from the cached keys as they are, 32 products a step summed in pairs into float32
// (vdpbf16ps): half the steps, and no widening. `Pairs`: head_dim / 32 (0: read at run time).
template <int Pairs>
SELFSPEC_AVX512_BF16 void paired_scores(const c10::BFloat16* const* lines, int64_t count_lines, const c10::BFloat16* keys,
                                        int64_t begin, int64_t end, int64_t head_dim, float scaling, float* scores,
                                        int64_t stride) {
  constexpr int64_t kPairLanes = 32;
  static const c10::BFloat16 zeros[512] = {};  // the keys of a block's positions past its end
  const int64_t pairs = Pairs > 0 ? Pairs : head_dim / kPairLanes;
  for (int64_t first = begin; first < end; first += kBlockPositions) {
    const int64_t valid = std::min(kBlockPositions, end - first);
    const c10::BFloat16* block[kBlockPositions];
    for (int64_t j = 0; j < kBlockPositions; ++j) block[j] = j < valid ? keys + (first + j) * head_dim : zeros;
    for (int64_t i = 0; i < count_lines; ++i) {
      __m512bh query[Pairs > 0 ? Pairs : 16];
      for (int64_t c = 0; c < pairs; ++c) query[c] = (__m512bh)_mm512_loadu_si512(lines[i] + c * kPairLanes);
      __m512 dots[kBlockPositions];
#pragma GCC unroll 16
      for (int64_t j = 0; j < kBlockPositions; ++j) {
        __m512 dot = _mm512_setzero_ps();
#pragma GCC unroll 8
        for (int64_t c = 0; c < pairs; ++c) {
          dot = _mm512_dpbf16_ps(dot, query[c], (__m512bh)_mm512_loadu_si512(block[j] + c * kPairLanes));
        }
        dots[j] = dot;
      }
      store_block(dots, valid, scaling, scores + i * stride + first - begin);
    }
  }
}

// `count` floats rounded to bfloat16, to nearest even (count a multiple of 32).
SELFSPEC_AVX512_BF16 void round_to_bf16(const float* from, int64_t count, c10::BFloat16* to) {
  for (int64_t i = 0; i < count; i += 32) {
    const __m512bh packed = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(from + i + 16), _mm512_loadu_ps(from + i));
    _mm512_storeu_si512(to + i, (__m512i)packed);
  }
}

bool avx512() {
  static const bool supported = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl");
  return supported;
}

bool avx512_bf16() {
  static const bool supported = avx512() && __builtin_cpu_supports("avx512bf16");
  return supported;
}

// How a shape's scores are made on this CPU; every row of every call of that shape takes the same way.
enum class ScoreWay { kAvx2, kWidened, kPaired };

template <typename Scalar>
ScoreWay score_way(int64_t head_dim, bool eight_lanes) {
  if (eight_lanes || !avx512() || head_dim % kWideLanes) return ScoreWay::kAvx2;
  if (std::is_same<Scalar, c10::BFloat16>::value && avx512_bf16() && head_dim % 32 == 0) return ScoreWay::kPaired;
  return ScoreWay::kWidened;
}

template <typename Scalar>
void scores_of_lines(ScoreWay way, const float* const* lines, const c10::BFloat16* const* rounded_lines,
                     int64_t count_lines, const Scalar* keys, int64_t begin, int64_t end, int64_t head_dim,
                     float scaling, float* scores, int64_t stride) {
  if constexpr (std::is_same<Scalar, c10::BFloat16>::value) {
    if (way == ScoreWay::kPaired) {
      switch (head_dim / 32) {
        case 2: return paired_scores<2>(rounded_lines, count_lines, keys, begin, end, head_dim, scaling, scores, stride);
        case 4: return paired_scores<4>(rounded_lines, count_lines, keys, begin, end, head_dim, scaling, scores, stride);
        default: return paired_scores<0>(rounded_lines, count_lines, keys, begin, end, head_dim, scaling, scores, stride);
      }
    }
  }
  if (way == ScoreWay::kWidened) {
    switch (head_dim / kWideLanes) {
      case 4: return widened_scores<4>(lines, count_lines, keys, begin, end, head_dim, scaling, scores, stride);
      case 8: return widened_scores<8>(lines, count_lines, keys, begin, end, head_dim, scaling, scores, stride);
      default: return widened_scores<0>(lines, count_lines, keys, begin, end, head_dim, scaling, scores, stride);
    }
  }
  scores_avx2(lines, count_lines, keys, begin, end, head_dim, scaling, scores, stride);
}

// A line's `count` scores replaced by e^(score - largest); returns the largest, and the exponentials' sum in `sum`.
SELFSPEC_AVX2 float exponentials_avx2(float* row, int64_t count, float* sum) {
  float top = -INFINITY;
  for (int64_t p = 0; p < count; ++p) top = std::max(top, row[p]);
  __m256 total = _mm256_setzero_ps();
  int64_t p = 0;
  for (; p + kLanes <= count; p += kLanes) {
    const __m256 e = exp_lanes(_mm256_sub_ps(_mm256_loadu_ps(row + p), _mm256_set1_ps(top)));
    _mm256_storeu_ps(row + p, e);
    total = _mm256_add_ps(total, e);
  }
  *sum = lane_sum(total);
  for (; p < count; ++p) row[p] = std::exp(row[p] - top), *sum += row[p];
  return top;
}

SELFSPEC_AVX512 float exponentials_avx512(float* row, int64_t count, float* sum) {
  __m512 top_lanes = _mm512_set1_ps(-INFINITY);
  for (int64_t p = 0; p < count; p += kWideLanes) {
    const __mmask16 mask = static_cast<__mmask16>(count - p >= kWideLanes ? 0xFFFFu : (1u << (count - p)) - 1u);
    top_lanes = _mm512_mask_max_ps(top_lanes, mask, top_lanes, _mm512_maskz_loadu_ps(mask, row + p));
  }
  const float top = _mm512_reduce_max_ps(top_lanes);
  __m512 total = _mm512_setzero_ps();
  for (int64_t p = 0; p < count; p += kWideLanes) {
    const __mmask16 mask = static_cast<__mmask16>(count - p >= kWideLanes ? 0xFFFFu : (1u << (count - p)) - 1u);
    const __m512 e = exp_wide(_mm512_sub_ps(_mm512_maskz_loadu_ps(mask, row + p), _mm512_set1_ps(top)));
    _mm512_mask_storeu_ps(row + p, mask, e);
    total = _mm512_mask_add_ps(total, mask, total, e);
  }
  *sum = _mm512_reduce_add_ps(total);
  return top;
}

// The values over positions [begin, end) weighted by the lines' `scores` (exponentials by then, `stride` apart), summed
// per line into weighted[i * head_dim ...]: each value chunk is read and widened once for all the lines.
template <typename Scalar>
SELFSPEC_AVX2 void weighted_avx2(const float* scores, int64_t stride, int64_t count_lines, const Scalar* values,
                                 int64_t begin, int64_t end, int64_t head_dim, float* weighted) {
  const int64_t chunks = head_dim / kLanes;
  std::fill(weighted, weighted + count_lines * head_dim, 0.f);
  for (int64_t p = begin; p < end; ++p) {
    const Scalar* value = values + p * head_dim;
    for (int64_t c = 0; c < chunks; ++c) {
      const __m256 lanes = load_lanes(value + c * kLanes);
      for (int64_t i = 0; i < count_lines; ++i) {
        float* sum = weighted + i * head_dim + c * kLanes;
        _mm256_storeu_ps(sum, _mm256_fmadd_ps(_mm256_set1_ps(scores[i * stride + p - begin]), lanes, _mm256_loadu_ps(sum)));
      }
    }
  }
}

// `Lines` lines' weighted sums of one 16-wide chunk of the values (or of all `Chunks` of them at once, `Chunks` > 0),
// each in a register of its own: the accumulators' count known when compiling, so that none is kept in memory, and
// enough of them that the additions do not wait on each other. Each sum adds the positions in order.
template <int Lines, int Chunks, typename Scalar>
SELFSPEC_AVX512 void weighted_lines(const float* scores, int64_t stride, const Scalar* values, int64_t begin,
                                    int64_t end, int64_t chunk, int64_t head_dim, float* weighted) {
  constexpr int kWidth = Chunks > 0 ? Chunks : 1;
  // (-O2 keeps arrays in memory unless their loops unroll whole: hence the pragmas.)
  __m512 sums[Lines][kWidth];
#pragma GCC unroll 8
  for (int i = 0; i < Lines; ++i)
#pragma GCC unroll 8
    for (int c = 0; c < kWidth; ++c) sums[i][c] = _mm512_setzero_ps();
  for (int64_t p = begin; p < end; ++p) {
    const Scalar* value = values + p * head_dim + chunk * kWideLanes;
    __m512 lanes[kWidth];
#pragma GCC unroll 8
    for (int c = 0; c < kWidth; ++c) lanes[c] = load_wide(value + c * kWideLanes);
#pragma GCC unroll 8
    for (int i = 0; i < Lines; ++i) {
      const __m512 score = _mm512_set1_ps(scores[i * stride + p - begin]);
#pragma GCC unroll 8
      for (int c = 0; c < kWidth; ++c) sums[i][c] = _mm512_fmadd_ps(score, lanes[c], sums[i][c]);
    }
  }
#pragma GCC unroll 8
  for (int i = 0; i < Lines; ++i)
#pragma GCC unroll 8
    for (int c = 0; c < kWidth; ++c) _mm512_storeu_ps(weighted + i * head_dim + (chunk + c) * kWideLanes, sums[i][c]);
}

template <int Lines, typename Scalar>
SELFSPEC_AVX512 void weighted_block(const float* scores, int64_t stride, const Scalar* values, int64_t begin,
                                    int64_t end, int64_t head_dim, float* weighted) {
  if (head_dim == 4 * kWideLanes && Lines <= 4) {  // 64-wide heads: every chunk at once
    weighted_lines<Lines, 4>(scores, stride, values, begin, end, 0, head_dim, weighted);
    return;
  }
  for (int64_t chunk = 0; chunk < head_dim / kWideLanes; ++chunk) {
    weighted_lines<Lines, 0>(scores, stride, values, begin, end, chunk, head_dim, weighted);
  }
}

template <typename Scalar>
SELFSPEC_AVX512 void weighted_avx512(const float* scores, int64_t stride, int64_t count_lines, const Scalar* values,
                                     int64_t begin, int64_t end, int64_t head_dim, float* weighted) {
  constexpr int64_t kLinesAtOnce = 8;
  for (int64_t first = 0; first < count_lines; first += kLinesAtOnce) {
    const float* s = scores + first * stride;
    float* w = weighted + first * head_dim;
    switch (std::min(kLinesAtOnce, count_lines - first)) {
      case 1: weighted_block<1>(s, stride, values, begin, end, head_dim, w); break;
      case 2: weighted_block<2>(s, stride, values, begin, end, head_dim, w); break;
      case 3: weighted_block<3>(s, stride, values, begin, end, head_dim, w); break;
      case 4: weighted_block<4>(s, stride, values, begin, end, head_dim, w); break;
      case 5: weighted_block<5>(s, stride, values, begin, end, head_dim, w); break;
      case 6: weighted_block<6>(s, stride, values, begin, end, head_dim, w); break;
      case 7: weighted_block<7>(s, stride, values, begin, end, head_dim, w); break;
      default: weighted_block<8>(s, stride, values, begin, end, head_dim, w);
    }
  }
}

// Per (row, head, segment): the segment's largest score, the sum of e^(score - largest), and the values weighted by
// those exponentials (not yet divided by the sum).
struct Parts {
  int64_t heads, segments, head_dim;
  std::vector<float> weighted, largest, sums;
  Parts(int64_t rows, int64_t heads, int64_t segments, int64_t head_dim)
      : heads(heads), segments(segments), head_dim(head_dim), weighted(rows * heads * segments * head_dim),
        largest(rows * heads * segments), sums(rows * heads * segments) {}
  // A row's heads over one segment side by side, so that one task's group of heads writes one run of them.
  int64_t index(int64_t row, int64_t head, int64_t segment) const { return (row * segments + segment) * heads + head; }
};

// One group's heads over one segment, for the rows from `first_row` on (those that reach it): scores, then per row
// its exponentials over its own positions in the segment and the values they weigh.
template <typename Scalar>
void attend_segment(ScoreWay way, const float* queries, const c10::BFloat16* rounded, int64_t query_stride,
                    int64_t first_row, int64_t rows, const Scalar* keys, const Scalar* values, int64_t position,
                    int64_t segment, int64_t group, int64_t per_group, int64_t head_dim, float scaling, Parts& parts,
                    std::vector<float>& scores) {
  const int64_t begin = segment * kSegment, end = std::min(begin + kSegment, position + rows);
  const int64_t count_lines = (rows - first_row) * per_group;
  std::vector<const float*> lines(count_lines);
  std::vector<const c10::BFloat16*> rounded_lines(count_lines);
  for (int64_t r = first_row; r < rows; ++r) {
    for (int64_t h = 0; h < per_group; ++h) {
      const int64_t i = (r - first_row) * per_group + h, offset = r * query_stride + (group * per_group + h) * head_dim;
      lines[i] = queries + offset;
      rounded_lines[i] = rounded + offset;
    }
  }
  scores.resize(count_lines * kSegment);
  scores_of_lines(way, lines.data(), rounded_lines.data(), count_lines, keys, begin, end, head_dim, scaling,
                  scores.data(), kSegment);
  for (int64_t r = first_row; r < rows; ++r) {
    const int64_t row_end = std::min(end, position + r + 1);
    float* row_scores = scores.data() + (r - first_row) * per_group * kSegment;
    for (int64_t h = 0; h < per_group; ++h) {
      const int64_t at = parts.index(r, group * per_group + h, segment);
      float* line = row_scores + h * kSegment;
      parts.largest[at] = way == ScoreWay::kAvx2 ? exponentials_avx2(line, row_end - begin, &parts.sums[at])
                                                 : exponentials_avx512(line, row_end - begin, &parts.sums[at]);
    }
    float* weighted = parts.weighted.data() + parts.index(r, group * per_group, segment) * head_dim;
    if (way == ScoreWay::kAvx2) {
      weighted_avx2(row_scores, kSegment, per_group, values, begin, row_end, head_dim, weighted);
    } else {
      weighted_avx512(row_scores, kSegment, per_group, values, begin, row_end, head_dim, weighted);
    }
  }
}

// softmax(q . k) . v of one row's head from its first `segments` parts, merged in order.
SELFSPEC_AVX2 void merge_segments(const Parts& parts, int64_t row, int64_t head, int64_t segments, float* out) {
  // segment k's part: first + k * stride
  const int64_t first = parts.index(row, head, 0), stride = parts.heads, head_dim = parts.head_dim;
  const float* largest = parts.largest.data() + first;
  float top = -INFINITY;
  for (int64_t k = 0; k < segments; ++k) top = std::max(top, largest[k * stride]);
  float factors[kLanes];
  float total = 0.f;
  std::fill(out, out + head_dim, 0.f);
  for (int64_t k = 0; k < segments; ++k) {
    if (k % kLanes == 0) {  // e^(largest - top) for the next 8 segments at once
      float differences[kLanes] = {};
      for (int64_t i = 0; i < kLanes && k + i < segments; ++i) differences[i] = largest[(k + i) * stride] - top;
      _mm256_storeu_ps(factors, exp_lanes(_mm256_loadu_ps(differences)));
    }
    const float factor = factors[k % kLanes];
    total += parts.sums[first + k * stride] * factor;
    const float* part = parts.weighted.data() + (first + k * stride) * head_dim;
    for (int64_t d = 0; d < head_dim; d += kLanes) {
      _mm256_storeu_ps(out + d, _mm256_fmadd_ps(_mm256_loadu_ps(part + d), _mm256_set1_ps(factor), _mm256_loadu_ps(out + d)));
    }
  }
  const __m256 inverse = _mm256_set1_ps(1.f / total);
  for (int64_t d = 0; d < head_dim; d += kLanes) _mm256_storeu_ps(out + d, _mm256_mul_ps(_mm256_loadu_ps(out + d), inverse));
}

}  // namespace

template <typename Scalar>
void attend_rows(const float* queries, int64_t query_stride, int64_t rows, const Scalar* keys, const Scalar* values, int64_t head_stride,
                 int64_t position, int64_t heads, int64_t kv_heads, int64_t head_dim, float scaling, float* out,
                 bool eight_lanes) {
  const int64_t per_group = heads / kv_heads, query_width = heads * head_dim;
  const int64_t segments = (position + rows + kSegment - 1) / kSegment;
  const ScoreWay way = score_way<Scalar>(head_dim, eight_lanes);
  std::vector<c10::BFloat16> rounded;
  if (way == ScoreWay::kPaired) {
    rounded.resize(rows * query_stride);
    for (int64_t r = 0; r < rows; ++r) round_to_bf16(queries + r * query_stride, query_width, rounded.data() + r * query_stride);
  }
  Parts parts(rows, heads, segments, head_dim);
  // Tasks segment by segment, so that each thread's share is a run of consecutive positions.
  at::parallel_for(0, segments * kv_heads, 1, [&](int64_t first_task, int64_t end_task) {
    std::vector<float> scores;
    for (int64_t task = first_task; task < end_task; ++task) {
      const int64_t segment = task / kv_heads, group = task % kv_heads;
      const int64_t first_row = std::max<int64_t>(0, segment * kSegment - position);  // the rows that reach it
      attend_segment(way, queries, rounded.data(), query_stride, first_row, rows, keys + group * head_stride,
                     values + group * head_stride, position, segment, group, per_group, head_dim, scaling, parts, scores);
    }
  });
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row_segments = (position + r + 1 + kSegment - 1) / kSegment;
    for (int64_t h = 0; h < heads; ++h) merge_segments(parts, r, h, row_segments, out + r * query_width + h * head_dim);
  }
}

template void attend_rows<float>(const float*, int64_t, int64_t, const float*, const float*, int64_t, int64_t, int64_t, int64_t,
                                 int64_t, float, float*, bool);
template void attend_rows<c10::BFloat16>(const float*, int64_t, int64_t, const c10::BFloat16*, const c10::BFloat16*, int64_t,
                                         int64_t, int64_t, int64_t, int64_t, float, float*, bool);
template void attend_rows<c10::Half>(const float*, int64_t, int64_t, const c10::Half*, const c10::Half*, int64_t, int64_t,
                                     int64_t, int64_t, int64_t, float, float*, bool);

bool rows_attention_available() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

namespace {

// attend_cached_rows in a cache of Scalar: the queries widened and the output rounded by plain loops (a forward
// calls it once a layer, and each tensor operation it saves costs microseconds whatever its size).
template <typename Scalar>
at::Tensor attend_in(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values, int64_t position,
                     float scaling, bool eight_lanes) {
  const int64_t heads = query.size(1), rows = query.size(2), head_dim = query.size(3), kv_heads = keys.size(1);
  const int64_t width = heads * head_dim;
  const Scalar* from = query.data_ptr<Scalar>();
  std::vector<float> queries(rows * width), out(rows * width);
  for (int64_t r = 0; r < rows; ++r) {  // (1, heads, q, d) at any strides -> rows of (heads, d)
    for (int64_t h = 0; h < heads; ++h) {
      const Scalar* head = from + h * query.stride(1) + r * query.stride(2);
      for (int64_t d = 0; d < head_dim; ++d) queries[r * width + h * head_dim + d] = static_cast<float>(head[d * query.stride(3)]);
    }
  }
  attend_rows(queries.data(), width, rows, keys.data_ptr<Scalar>(), values.data_ptr<Scalar>(), keys.stride(1), position,
              heads, kv_heads, head_dim, scaling, out.data(), eight_lanes);
  at::Tensor result = at::empty({1, rows, heads, head_dim}, query.options());
  Scalar* to = result.data_ptr<Scalar>();
  for (int64_t i = 0; i < rows * width; ++i) to[i] = static_cast<Scalar>(out[i]);
  return result.transpose(1, 2);
}

}  // namespace

at::Tensor attend_cached_rows(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values,
                              int64_t position, double scaling, bool eight_lanes) {
  c10::InferenceMode inference;
  TORCH_CHECK(rows_attention_available(), "attention of rows needs AVX2, FMA and F16C");
  TORCH_CHECK(query.dim() == 4 && keys.dim() == 4 && query.size(0) == 1 && keys.size(0) == 1, "batch 1, (1, heads, q, d)");
  const int64_t heads = query.size(1), rows = query.size(2), head_dim = query.size(3), kv_heads = keys.size(1);
  TORCH_CHECK(head_dim % kLanes == 0 && head_dim <= 512 && heads % kv_heads == 0 && keys.size(3) == head_dim,
              "heads a multiple of 8 up to 512 wide, whole groups");
  TORCH_CHECK(keys.stride(3) == 1 && keys.stride(2) == head_dim && keys.strides() == values.strides() &&
                  keys.sizes() == values.sizes() && keys.scalar_type() == values.scalar_type() &&
                  query.scalar_type() == keys.scalar_type(),
              "a cache layer's key and value buffers in the queries' dtype, each head's positions in consecutive rows");
  TORCH_CHECK(position >= 0 && position + rows <= keys.size(2), "the rows' positions inside the buffers");
  const float scale = static_cast<float>(scaling);
  switch (keys.scalar_type()) {
    case at::kFloat: return attend_in<float>(query, keys, values, position, scale, eight_lanes);
    case at::kBFloat16: return attend_in<c10::BFloat16>(query, keys, values, position, scale, eight_lanes);
    case at::kHalf: return attend_in<c10::Half>(query, keys, values, position, scale, eight_lanes);
    default: TORCH_CHECK(false, "a float32, bfloat16 or float16 cache");
  }
}

// Attention of a forward's few rows over a static cache layer, one row at a time: each row over exactly the
// positions up to its own, in an order that depends on nothing else. sdpa's sums over a row's keys are grouped by
// how many keys and queries the call holds, so a verification's row and the one-token step at its position can
// round differently: in bfloat16 often enough to change a greedy token. Here a verification's rows are, bit for
// bit, the steps that would have run one by one (tests/test_native_layers.py). Softmax in float32 throughout.
#include "rows_attention.h"

#include <ATen/Parallel.h>

#include <cmath>
#include <vector>

#include "avx2_lanes.h"

using namespace selfspec_lanes;

namespace {

constexpr int64_t kPositionsToSplit = 64;  // a row's positions are split between the threads from this many on

// Scores q . k * scaling of the `per_group` query heads over positions [begin, end) (keys `row_stride` apart):
// scores[h * count + p - begin], 8 lanes a step.
template <typename Scalar>
SELFSPEC_AVX2 void scores_avx2(const float* queries, int64_t per_group, const Scalar* keys, int64_t row_stride,
                               int64_t begin, int64_t end, int64_t head_dim, float scaling, float* scores) {
  const int64_t count = end - begin, chunks = head_dim / kLanes;
  for (int64_t p = 0; p < count; ++p) {
    const Scalar* key = keys + (begin + p) * row_stride;
    for (int64_t h = 0; h < per_group; ++h) {
      __m256 dot = _mm256_setzero_ps();
      for (int64_t c = 0; c < chunks; ++c) {
        dot = _mm256_fmadd_ps(_mm256_loadu_ps(queries + h * head_dim + c * kLanes), load_lanes(key + c * kLanes), dot);
      }
      scores[h * count + p] = lane_sum(dot) * scaling;
    }
  }
}

// The values over positions [begin, end) weighted by each head's `scores` (exponentials by then), summed per head
// into weighted[h * head_dim ...] (in L1): each value chunk is read and widened once for all the heads.
template <typename Scalar>
SELFSPEC_AVX2 void weighted_avx2(const float* scores, int64_t per_group, const Scalar* values, int64_t row_stride,
                                 int64_t begin, int64_t end, int64_t head_dim, float* weighted) {
  const int64_t count = end - begin, chunks = head_dim / kLanes;
  std::fill(weighted, weighted + per_group * head_dim, 0.f);
  for (int64_t p = 0; p < count; ++p) {
    const Scalar* value = values + (begin + p) * row_stride;
    for (int64_t c = 0; c < chunks; ++c) {
      const __m256 lanes = load_lanes(value + c * kLanes);
      for (int64_t h = 0; h < per_group; ++h) {
        float* sum = weighted + h * head_dim + c * kLanes;
        _mm256_storeu_ps(sum, _mm256_fmadd_ps(_mm256_set1_ps(scores[h * count + p]), lanes, _mm256_loadu_ps(sum)));
      }
    }
  }
}

// The same two with 16 lanes, where the CPU has AVX-512 and heads are a multiple of 16 wide. Scores come 16 positions
// at a time: their keys widened once for all the group's heads, and 16 dot products' lanes summed together
// (sum16) instead of one reduction each, which cost more than the products. The weighted sums stay in registers over
// all the positions.
constexpr int64_t kBlockPositions = 16;

// Lane j of the result: the sum of v[j]'s 16 lanes (a transpose by unpacks and 128-bit shuffles, adding as it goes).
SELFSPEC_AVX512 inline __m512 sum16(const __m512* v) {
  __m512 pairs[8], quads[4];
  for (int i = 0; i < 8; ++i) {
    pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
  }
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

// scores_avx512 over whole blocks of 16 positions, `Chunks` 16-wide chunks a head (0: head_dim / 16, read at run
// time; 4 and 8, the usual 64- and 128-wide heads, known when compiling so that the loops unroll).
template <int Chunks, typename Scalar>
SELFSPEC_AVX512 int64_t score_blocks(const float* queries, int64_t per_group, const Scalar* keys, int64_t row_stride,
                                     int64_t begin, int64_t count, int64_t head_dim, float scaling, float* scores) {
  const int64_t chunks = Chunks > 0 ? Chunks : head_dim / kWideLanes;
  float widened[kBlockPositions * 512];  // a block's keys as float32 (heads are at most 512 wide)
  int64_t p = 0;
  for (; p + kBlockPositions <= count; p += kBlockPositions) {
    for (int64_t j = 0; j < kBlockPositions; ++j) {
      const Scalar* key = keys + (begin + p + j) * row_stride;
      for (int64_t c = 0; c < chunks; ++c) _mm512_storeu_ps(widened + j * head_dim + c * kWideLanes, load_wide(key + c * kWideLanes));
    }
    for (int64_t h = 0; h < per_group; ++h) {
      const float* query = queries + h * head_dim;
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
      _mm512_storeu_ps(scores + h * count + p, _mm512_mul_ps(sum16(dots), _mm512_set1_ps(scaling)));
    }
  }
  return p;
}

template <typename Scalar>
SELFSPEC_AVX512 void scores_avx512(const float* queries, int64_t per_group, const Scalar* keys, int64_t row_stride,
                                   int64_t begin, int64_t end, int64_t head_dim, float scaling, float* scores) {
  const int64_t count = end - begin, chunks = head_dim / kWideLanes;
  int64_t p;
  switch (chunks) {
    case 4: p = score_blocks<4>(queries, per_group, keys, row_stride, begin, count, head_dim, scaling, scores); break;
    case 8: p = score_blocks<8>(queries, per_group, keys, row_stride, begin, count, head_dim, scaling, scores); break;
    default: p = score_blocks<0>(queries, per_group, keys, row_stride, begin, count, head_dim, scaling, scores);
  }
  for (; p < count; ++p) {  // the last few positions one at a time
    const Scalar* key = keys + (begin + p) * row_stride;
    for (int64_t h = 0; h < per_group; ++h) {
      __m512 dot = _mm512_setzero_ps();
      for (int64_t c = 0; c < chunks; ++c) {
        dot = _mm512_fmadd_ps(_mm512_loadu_ps(queries + h * head_dim + c * kWideLanes), load_wide(key + c * kWideLanes),
                              dot);
      }
      scores[h * count + p] = _mm512_reduce_add_ps(dot) * scaling;
    }
  }
}

// `Heads` heads' weighted sums of one 16-wide chunk of the values (or of all `Chunks` of them at once, `Chunks` > 0),
// each in a register of its own: the accumulators' count known when compiling, so that none is kept in memory, and
// enough of them that the additions do not wait on each other. Each sum adds the positions in order, as before.
template <int Heads, int Chunks, typename Scalar>
SELFSPEC_AVX512 void weighted_heads(const float* scores, int64_t count, const Scalar* values, int64_t row_stride,
                                    int64_t begin, int64_t chunk, int64_t head_dim, float* weighted) {
  constexpr int kWidth = Chunks > 0 ? Chunks : 1;
  // (-O2 keeps arrays in memory unless their loops unroll whole: hence the pragmas.)
  __m512 sums[Heads][kWidth];
#pragma GCC unroll 8
  for (int h = 0; h < Heads; ++h)
#pragma GCC unroll 8
    for (int c = 0; c < kWidth; ++c) sums[h][c] = _mm512_setzero_ps();
  for (int64_t p = 0; p < count; ++p) {
    const Scalar* value = values + (begin + p) * row_stride + chunk * kWideLanes;
    __m512 lanes[kWidth];
#pragma GCC unroll 8
    for (int c = 0; c < kWidth; ++c) lanes[c] = load_wide(value + c * kWideLanes);
#pragma GCC unroll 8
    for (int h = 0; h < Heads; ++h) {
      const __m512 score = _mm512_set1_ps(scores[h * count + p]);
#pragma GCC unroll 8
      for (int c = 0; c < kWidth; ++c) sums[h][c] = _mm512_fmadd_ps(score, lanes[c], sums[h][c]);
    }
  }
#pragma GCC unroll 8
  for (int h = 0; h < Heads; ++h)
#pragma GCC unroll 8
    for (int c = 0; c < kWidth; ++c) _mm512_storeu_ps(weighted + h * head_dim + (chunk + c) * kWideLanes, sums[h][c]);
}

template <int Heads, typename Scalar>
SELFSPEC_AVX512 void weighted_block(const float* scores, int64_t count, const Scalar* values, int64_t row_stride,
                                    int64_t begin, int64_t head_dim, float* weighted) {
  if (head_dim == 4 * kWideLanes && Heads <= 4) {  // 64-wide heads: every chunk at once
    weighted_heads<Heads, 4>(scores, count, values, row_stride, begin, 0, head_dim, weighted);
    return;
  }
  for (int64_t chunk = 0; chunk < head_dim / kWideLanes; ++chunk) {
    weighted_heads<Heads, 0>(scores, count, values, row_stride, begin, chunk, head_dim, weighted);
  }
}

template <typename Scalar>
SELFSPEC_AVX512 void weighted_avx512(const float* scores, int64_t per_group, const Scalar* values, int64_t row_stride,
                                     int64_t begin, int64_t end, int64_t head_dim, float* weighted) {
  constexpr int64_t kHeadsAtOnce = 8;
  const int64_t count = end - begin;
  for (int64_t first = 0; first < per_group; first += kHeadsAtOnce) {
    const float* s = scores + first * count;
    float* w = weighted + first * head_dim;
    switch (std::min(kHeadsAtOnce, per_group - first)) {
      case 1: weighted_block<1>(s, count, values, row_stride, begin, head_dim, w); break;
      case 2: weighted_block<2>(s, count, values, row_stride, begin, head_dim, w); break;
      case 3: weighted_block<3>(s, count, values, row_stride, begin, head_dim, w); break;
      case 4: weighted_block<4>(s, count, values, row_stride, begin, head_dim, w); break;
      case 5: weighted_block<5>(s, count, values, row_stride, begin, head_dim, w); break;
      case 6: weighted_block<6>(s, count, values, row_stride, begin, head_dim, w); break;
      case 7: weighted_block<7>(s, count, values, row_stride, begin, head_dim, w); break;
      default: weighted_block<8>(s, count, values, row_stride, begin, head_dim, w);
    }
  }
}

bool wide_lanes(int64_t head_dim) {
  static const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                             __builtin_cpu_supports("avx512vl");
  return avx512 && head_dim % kWideLanes == 0;
}

// One query per head over cached positions [begin, end) of its group's keys and values (rows `row_stride` apart),
// for the `per_group` query heads that share them: each head's largest score, the sum of e^(score - largest), and
// the values weighted by those exponentials (not yet divided by the sum), so that parts over other positions can
// be merged (merge_parts).
template <typename Scalar>
SELFSPEC_AVX2 void attend_part(const float* queries, int64_t per_group, const Scalar* keys, const Scalar* values,
                               int64_t row_stride, int64_t begin, int64_t end, int64_t head_dim, float scaling,
                               float* weighted, float* largest, float* sums, std::vector<float>& scores) {
  const int64_t count = end - begin;
  const bool wide = wide_lanes(head_dim);
  scores.resize(per_group * count);
  if (wide) {
    scores_avx512(queries, per_group, keys, row_stride, begin, end, head_dim, scaling, scores.data());
  } else {
    scores_avx2(queries, per_group, keys, row_stride, begin, end, head_dim, scaling, scores.data());
  }
  for (int64_t h = 0; h < per_group; ++h) {
    float* row = scores.data() + h * count;
    float top = -INFINITY;
    for (int64_t p = 0; p < count; ++p) top = std::max(top, row[p]);
    __m256 total = _mm256_setzero_ps();
    int64_t p = 0;
    for (; p + kLanes <= count; p += kLanes) {
      const __m256 e = exp_lanes(_mm256_sub_ps(_mm256_loadu_ps(row + p), _mm256_set1_ps(top)));
      _mm256_storeu_ps(row + p, e);
      total = _mm256_add_ps(total, e);
    }
    float sum = lane_sum(total);
    for (; p < count; ++p) row[p] = std::exp(row[p] - top), sum += row[p];
    largest[h] = top, sums[h] = sum;
  }
  if (wide) {
    weighted_avx512(scores.data(), per_group, values, row_stride, begin, end, head_dim, weighted);
  } else {
    weighted_avx2(scores.data(), per_group, values, row_stride, begin, end, head_dim, weighted);
  }
}

// softmax(q . k) . v of one head from its parts over consecutive position ranges (attend_part's outputs).
void merge_parts(const float* weighted, const float* largest, const float* sums, int64_t parts, int64_t part_stride,
                 int64_t head_dim, float* out) {
  float top = -INFINITY;
  for (int64_t i = 0; i < parts; ++i) top = std::max(top, largest[i * part_stride]);
  float total = 0.f;
  std::fill(out, out + head_dim, 0.f);
  for (int64_t i = 0; i < parts; ++i) {
    const float factor = std::exp(largest[i * part_stride] - top);
    total += sums[i * part_stride] * factor;
    const float* part = weighted + i * part_stride * head_dim;
    for (int64_t d = 0; d < head_dim; ++d) out[d] += part[d] * factor;
  }
  for (int64_t d = 0; d < head_dim; ++d) out[d] /= total;
}

struct Task {
  int64_t row, group, part, parts;
};

}  // namespace

template <typename Scalar>
void attend_rows(const float* queries, int64_t query_stride, int64_t rows, const Scalar* keys, const Scalar* values, int64_t head_stride,
                 int64_t position, int64_t heads, int64_t kv_heads, int64_t head_dim, float scaling, float* out) {
  const int64_t per_group = heads / kv_heads, query_width = heads * head_dim, threads = at::get_num_threads();
  // A row's positions are split into a part per thread once there are enough of them, so that every thread has
  // work (three groups on two threads would leave one idle for a third of the time); how many parts depends on the
  // row's own positions only, so that its sums are grouped alike in any forward.
  std::vector<Task> tasks;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t parts = position + r + 1 >= kPositionsToSplit ? std::max<int64_t>(1, threads) : 1;
    for (int64_t g = 0; g < kv_heads; ++g) {
      for (int64_t part = 0; part < parts; ++part) tasks.push_back({r, g, part, parts});
    }
  }
  const int64_t count_tasks = static_cast<int64_t>(tasks.size());
  std::vector<float> weighted(count_tasks * per_group * head_dim), largest(count_tasks * per_group),
      sums(count_tasks * per_group);
  at::parallel_for(0, count_tasks, 1, [&](int64_t first_task, int64_t end_task) {
    std::vector<float> scores;
    for (int64_t i = first_task; i < end_task; ++i) {
      const Task& t = tasks[i];
      const int64_t count = position + t.row + 1;
      attend_part(queries + t.row * query_stride + t.group * per_group * head_dim, per_group, keys + t.group * head_stride,
                  values + t.group * head_stride, head_dim, count * t.part / t.parts, count * (t.part + 1) / t.parts,
                  head_dim, scaling, weighted.data() + i * per_group * head_dim, largest.data() + i * per_group,
                  sums.data() + i * per_group, scores);
    }
  });
  for (int64_t i = 0; i < count_tasks; i += tasks[i].parts) {  // each (row, group)'s parts are consecutive tasks
    const Task& t = tasks[i];
    for (int64_t h = 0; h < per_group; ++h) {
      // part j's values of head h: first + j * per_group
      const int64_t first = i * per_group + h;
      merge_parts(weighted.data() + first * head_dim, largest.data() + first, sums.data() + first, t.parts, per_group,
                  head_dim, out + t.row * query_width + (t.group * per_group + h) * head_dim);
    }
  }
}

template void attend_rows<float>(const float*, int64_t, int64_t, const float*, const float*, int64_t, int64_t, int64_t, int64_t,
                                 int64_t, float, float*);
template void attend_rows<c10::BFloat16>(const float*, int64_t, int64_t, const c10::BFloat16*, const c10::BFloat16*, int64_t,
                                         int64_t, int64_t, int64_t, int64_t, float, float*);
template void attend_rows<c10::Half>(const float*, int64_t, int64_t, const c10::Half*, const c10::Half*, int64_t, int64_t,
                                     int64_t, int64_t, int64_t, float, float*);

bool rows_attention_available() {
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
}

namespace {

// attend_cached_rows in a cache of Scalar: the queries widened and the output rounded by plain loops (a forward
// calls it once a layer, and each tensor operation it saves costs microseconds whatever its size).
template <typename Scalar>
at::Tensor attend_in(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values, int64_t position,
                     float scaling) {
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
              heads, kv_heads, head_dim, scaling, out.data());
  at::Tensor result = at::empty({1, rows, heads, head_dim}, query.options());
  Scalar* to = result.data_ptr<Scalar>();
  for (int64_t i = 0; i < rows * width; ++i) to[i] = static_cast<Scalar>(out[i]);
  return result.transpose(1, 2);
}

}  // namespace

at::Tensor attend_cached_rows(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values,
                              int64_t position, double scaling) {
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
    case at::kFloat: return attend_in<float>(query, keys, values, position, scale);
    case at::kBFloat16: return attend_in<c10::BFloat16>(query, keys, values, position, scale);
    case at::kHalf: return attend_in<c10::Half>(query, keys, values, position, scale);
    default: TORCH_CHECK(false, "a float32, bfloat16 or float16 cache");
  }
}

// A draft token's greedy choice in one call (sampling.greedy_choice): the first largest of one row of float32 logits,
// as sampling.greedy_tokens takes it, and its softmax probability, which the draft-exit rule reads. torch makes these
// in some six operations a token, each costing tens of microseconds right after a draft token has streamed its
// weights through the caches (docs/BENCHMARKS.md).
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <tuple>

#include "avx2_lanes.h"

using namespace selfspec_lanes;

namespace {

// sum of e^(x - top) over the row, 8 lanes at a time.
SELFSPEC_AVX2 double exp_sum(const float* x, int64_t size, float top) {
  __m256 total = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= size; i += kLanes) {
    total = _mm256_add_ps(total, exp_lanes(_mm256_sub_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(top))));
  }
  double sum = lane_sum(total);
  for (; i < size; ++i) sum += std::exp(static_cast<double>(x[i] - top));
  return sum;
}

// The row's largest value, 8 lanes at a time; NaN where the row holds one.
SELFSPEC_AVX2 float row_max(const float* x, int64_t size) {
  __m256 top = _mm256_set1_ps(-INFINITY), unordered = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= size; i += kLanes) {
    const __m256 v = _mm256_loadu_ps(x + i);
    top = _mm256_max_ps(top, v);
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  }
  float lanes[kLanes], result = -INFINITY;
  _mm256_storeu_ps(lanes, top);
  for (const float lane : lanes) result = std::max(result, lane);
  bool nan = _mm256_movemask_ps(unordered) != 0;
  for (; i < size; ++i) result = std::max(result, x[i]), nan = nan || std::isnan(x[i]);
  return nan ? NAN : result;
}

// The first index holding `value` (which the row holds), 8 lanes at a time.
SELFSPEC_AVX2 int64_t first_of(const float* x, int64_t size, float value) {
  int64_t i = 0;
  for (; i + kLanes <= size; i += kLanes) {
    const int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), _mm256_set1_ps(value), _CMP_EQ_OQ));
    if (mask != 0) return i + __builtin_ctz(mask);
  }
  for (; i < size && x[i] != value; ++i) {
  }
  return i;
}

}  // namespace

std::tuple<at::Tensor, double> top_choice(const at::Tensor& logits) {
  TORCH_CHECK(logits.dim() == 1 && logits.numel() > 0 && logits.scalar_type() == at::kFloat && logits.is_contiguous() &&
                  logits.device().is_cpu(),
              "one contiguous row of float32 logits on the CPU");
  static const bool has_avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");  // asked once
  TORCH_CHECK(has_avx2, "the greedy choice needs AVX2 and FMA");
  const float* x = logits.data_ptr<float>();
  const int64_t size = logits.numel();
  const float top = row_max(x, size);
  if (std::isnan(top)) {  // as torch's argmax: the first NaN
    int64_t first = 0;
    while (!std::isnan(x[first])) ++first;
    return {at::full({1}, first, at::kLong), NAN};
  }
  return {at::full({1}, first_of(x, size, top), at::kLong), 1.0 / exp_sum(x, size, top)};
}

// A draft's output head as a cheap screen and a second look: every token scored by low-bit weights (int2: a
// third of an int8 head's bytes, and a draft token streams every byte of its head), then the few best of them
// scored again from the model's own weights. The draft's top choice is nearly always among those few, so it
// proposes what an int8 head would, for fewer bytes (docs/BENCHMARKS.md); the full model verifies either way.
#include <algorithm>
#include <functional>
#include <utility>
#include <vector>

#include "avx2_lanes.h"
#include "products.h"

using namespace selfspec_lanes;

namespace {

// The indices of the `count` largest of `scores` (in no particular order): a min-heap of the best so far, and
// 8 scores at a time compared against its smallest, which almost all of a vocabulary's scores fall below.
SELFSPEC_AVX2 std::vector<int64_t> best_indices(const float* scores, int64_t size, int64_t count) {
  std::vector<std::pair<float, int64_t>> heap;
  heap.reserve(count);
  const auto later = std::greater<std::pair<float, int64_t>>();
  auto offer = [&](int64_t i) {
    if (static_cast<int64_t>(heap.size()) < count) {
      heap.emplace_back(scores[i], i);
      std::push_heap(heap.begin(), heap.end(), later);
    } else if (scores[i] > heap.front().first) {
      std::pop_heap(heap.begin(), heap.end(), later);
      heap.back() = {scores[i], i};
      std::push_heap(heap.begin(), heap.end(), later);
    }
  };
  int64_t i = 0;
  for (; i < std::min(count, size); ++i) offer(i);
  for (; i + kLanes <= size; i += kLanes) {
    const __m256 above = _mm256_cmp_ps(_mm256_loadu_ps(scores + i), _mm256_set1_ps(heap.front().first), _CMP_GT_OQ);
    if (_mm256_movemask_ps(above) != 0) {
      for (int64_t j = i; j < i + kLanes; ++j) offer(j);
    }
  }
  for (; i < size; ++i) offer(i);
  std::vector<int64_t> indices(heap.size());
  for (size_t j = 0; j < heap.size(); ++j) indices[j] = heap[j].second;
  return indices;
}

// x . row, in float32 (the row widened 8 lanes at a time).
template <typename Scalar>
SELFSPEC_AVX2_F16C float dot(const float* x, const Scalar* row, int64_t width) {
  __m256 sum = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + kLanes <= width; i += kLanes) sum = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_lanes(row + i), sum);
  float total = lane_sum(sum);
  for (; i < width; ++i) total += x[i] * static_cast<float>(row[i]);
  return total;
}

template <typename Scalar>
void rescore(const float* x, const Scalar* weight, int64_t width, const std::vector<int64_t>& indices, float* scores) {
  for (const int64_t index : indices) scores[index] = dot(x, weight + index * width, width);
}

}  // namespace

at::Tensor screened_logits(const at::Tensor& hidden, int64_t kind, const at::Tensor& packed, const at::Tensor& scales,
                           const at::Tensor& weight, int64_t candidates) {
  c10::InferenceMode inference;
  const int64_t width = hidden.size(-1), rows = hidden.numel() / std::max<int64_t>(width, 1);
  check_int8_dot(kind, packed, scales, width);
  const int64_t vocabulary = weight.size(0);
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == width && weight.is_contiguous() && vocabulary == packed.size(0) * 16,
              "the model's own head weight (vocabulary, hidden), contiguous, the screen's rows");
  TORCH_CHECK(candidates >= 1 && candidates <= vocabulary, "between 1 and ", vocabulary, " candidates; got ", candidates);
  const at::Tensor x = hidden.to(at::kFloat).contiguous().view({rows, width});
  at::Tensor out = at::empty({rows, vocabulary}, x.options());
  int8_dot_rows(kind, x.data_ptr<float>(), rows, packed, scales, out.data_ptr<float>());
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x.data_ptr<float>() + r * width;
    float* scores = out.data_ptr<float>() + r * vocabulary;
    const std::vector<int64_t> best = best_indices(scores, vocabulary, candidates);
    switch (weight.scalar_type()) {
      case at::kFloat: rescore(row, weight.data_ptr<float>(), width, best, scores); break;
      case at::kBFloat16: rescore(row, weight.data_ptr<c10::BFloat16>(), width, best, scores); break;
      case at::kHalf: rescore(row, weight.data_ptr<c10::Half>(), width, best, scores); break;
      default: TORCH_CHECK(false, "a float32, bfloat16 or float16 head weight");
    }
  }
  std::vector<int64_t> shape(hidden.sizes().begin(), hidden.sizes().end());
  shape.back() = vocabulary;
  return out.view(shape);
}

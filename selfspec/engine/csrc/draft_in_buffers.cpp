// The fused low-bit draft's forward with nothing but its products between buffers: where every product is an
// 8-bit dot product (int8_dot_products.cpp), the norms, rotary, cache writes, attention and activations of a draft
// token -- or of the few rows that read copied tokens -- run as plain loops over float buffers instead of some
// forty tensor operations a layer, each of which costs its dispatch whatever its size (docs/BENCHMARKS.md). The
// stream stays in float32 throughout; keys and values are written to the cache in its own dtype. It computes what
// run_draft_layers computes up to rounding (tests/test_native_layers.py), and the draft only proposes: the full
// model verifies.
#include "layer_loops.h"
#include "products.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <cmath>
#include <vector>

// AVX2 (8 lanes), which every CPU with the 8-bit dot products has: attention is a small share of the token.
#define SELFSPEC_AVX2 __attribute__((target("avx2,fma")))

namespace {

constexpr int64_t kLanes = 8;
constexpr int64_t kPositionsToSplit = 64;  // a group's positions are split between the threads from this many on

SELFSPEC_AVX2 inline __m256 load_lanes(const float* p) { return _mm256_loadu_ps(p); }
SELFSPEC_AVX2 inline __m256 load_lanes(const c10::BFloat16* p) {
  const __m128i bits = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bits), 16));
}

SELFSPEC_AVX2 inline float lane_sum(__m256 v) {
  const __m128 halves = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  const __m128 pairs = _mm_add_ps(halves, _mm_movehl_ps(halves, halves));
  return _mm_cvtss_f32(_mm_add_ss(pairs, _mm_movehdup_ps(pairs)));
}

// e^x for |x| <= 87 (softmax after its maximum is taken off; silu): 2^n 2^f, 2^f by its Taylor series to f^6 on
// |f| <= 1/2 (relative error below 1e-7), 2^n built in the exponent bits (|n| <= 126; e^-87 is zero enough).
SELFSPEC_AVX2 inline __m256 exp_lanes(__m256 x) {
  const __m256 clamped = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.f)), _mm256_set1_ps(87.f));
  const __m256 t = _mm256_mul_ps(clamped, _mm256_set1_ps(1.4426950409f));
  const __m256 n = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m256 f = _mm256_sub_ps(t, n);
  __m256 p = _mm256_set1_ps(1.5403530e-4f);
  for (const float c : {1.3333558e-3f, 9.6181291e-3f, 5.5504109e-2f, 2.4022651e-1f, 6.9314718e-1f, 1.f}) {
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
  }
  const __m256i power = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(power));
}

// rms_norms.rms_normed on a float row: x / hypot(|x|, epsilon_norm) * scaled_weight.
void rms_normed(const float* x, const float* scaled_weight, float epsilon_norm, int64_t width, float* out) {
  double squares = 0.0;
  for (int64_t i = 0; i < width; ++i) squares += static_cast<double>(x[i]) * x[i];
  const float inverse = static_cast<float>(1.0 / std::sqrt(squares + static_cast<double>(epsilon_norm) * epsilon_norm));
  for (int64_t i = 0; i < width; ++i) out[i] = x[i] * inverse * scaled_weight[i];
}

// architectures.rotated on one head: x * cos + roll(x, d/2) * signed_sin.
void rotate(float* x, const float* cos, const float* signed_sin, int64_t head_dim) {
  float rolled[512];
  const int64_t half = head_dim / 2;
  for (int64_t i = 0; i < head_dim; ++i) rolled[i] = x[(i + half) % head_dim];
  for (int64_t i = 0; i < head_dim; ++i) x[i] = x[i] * cos[i] + rolled[i] * signed_sin[i];
}

// silu(gate) * up for a row of [gate | up], `width` each.
SELFSPEC_AVX2 void silu_times(const float* gate_up, int64_t width, float* out) {
  int64_t i = 0;
  for (; i + kLanes <= width; i += kLanes) {
    const __m256 gate = _mm256_loadu_ps(gate_up + i);
    const __m256 sigmoid = _mm256_div_ps(_mm256_set1_ps(1.f),
                                         _mm256_add_ps(_mm256_set1_ps(1.f), exp_lanes(_mm256_sub_ps(_mm256_setzero_ps(), gate))));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_mul_ps(gate, sigmoid), _mm256_loadu_ps(gate_up + width + i)));
  }
  for (; i < width; ++i) out[i] = gate_up[i] / (1.f + std::exp(-gate_up[i])) * gate_up[width + i];
}

template <typename Scalar>
void store_row(const float* from, int64_t width, Scalar* to) {
  for (int64_t i = 0; i < width; ++i) to[i] = static_cast<Scalar>(from[i]);
}

// One query per head over cached positions [begin, end) of its group's keys and values (rows `row_stride` apart),
// for the `per_group` query heads that share them: each head's largest score, the sum of e^(score - largest), and
// the values weighted by those exponentials (not yet divided by the sum), so that parts over other positions can
// be merged (merge_parts).
template <typename Scalar>
SELFSPEC_AVX2 void attend_part(const float* queries, int64_t per_group, const Scalar* keys, const Scalar* values,
                               int64_t row_stride, int64_t begin, int64_t end, int64_t head_dim, float scaling,
                               float* weighted, float* largest, float* sums, std::vector<float>& scores) {
  const int64_t count = end - begin, chunks = head_dim / kLanes;
  scores.resize(per_group * count);
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
  // Weighted values, summed in the output rows (in L1): each value chunk is read and widened once for all the
  // group's heads.
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

const float* floats(const at::Tensor& t) { return t.data_ptr<float>(); }

}  // namespace

at::Tensor run_draft_in_buffers(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& signed_sin,
                           int64_t position, const std::vector<int64_t>& plan, const std::vector<at::Tensor>& norms,
                           const std::vector<int64_t>& kinds, const std::vector<at::Tensor>& weights,
                           const std::vector<at::Tensor>& scales,
                           const std::vector<c10::optional<at::Tensor>>& biases, const std::vector<at::Tensor>& keys,
                           const std::vector<at::Tensor>& values, const std::vector<at::Tensor>& lengths,
                           int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t intermediate, double scaling) {
  c10::InferenceMode inference;
  const int64_t width = hidden.size(-1), rows = hidden.numel() / width, per_group = heads / kv_heads;
  const int64_t query_width = heads * head_dim, kv_width = kv_heads * head_dim, qkv_width = query_width + 2 * kv_width;
  TORCH_CHECK(rows >= 1 && head_dim % kLanes == 0 && head_dim <= 512 && heads % kv_heads == 0,
              "rows of the stream, heads of a multiple of 8 up to 512 wide, whole groups");
  TORCH_CHECK(cos.numel() == rows * head_dim && signed_sin.numel() == rows * head_dim, "a rotary row per row");
  TORCH_CHECK(norms.size() == 4 * plan.size() && weights.size() == 4 * plan.size(), "four norms and products a layer");
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t in = i % 4 == 1 ? query_width : i % 4 == 3 ? intermediate : width;
    check_int8_dot(kinds[i], weights[i], scales[i], in);
    TORCH_CHECK(!biases[i].has_value() || (biases[i]->scalar_type() == at::kFloat && biases[i]->is_contiguous()),
                "float biases");
  }
  for (const at::Tensor& norm : norms) TORCH_CHECK(norm.scalar_type() == at::kFloat && norm.is_contiguous(), "float norms");
  for (const at::Tensor& length : lengths) TORCH_CHECK(length.scalar_type() == at::kLong, "int64 cache lengths");
  const at::Tensor rotary_cos = cos.to(at::kFloat).contiguous(), rotary_sin = signed_sin.to(at::kFloat).contiguous();
  const int64_t widest = std::max({width, query_width, intermediate});
  std::vector<float> stream(rows * width), normed(rows * widest), qkv(rows * qkv_width), attended(rows * query_width),
      out(rows * width), gate_up(rows * 2 * intermediate);
  {
    const at::Tensor input = hidden.to(at::kFloat).contiguous();
    std::copy(floats(input), floats(input) + rows * width, stream.begin());
  }
  // Each product over all rows at once: the weights are read once, whatever the rows.
  auto product = [&](size_t index, const float* x, float* y, int64_t out_width) {
    int8_dot_rows(kinds[index], x, rows, weights[index], scales[index], y);
    if (biases[index].has_value()) {
      const float* bias = floats(*biases[index]);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t i = 0; i < out_width; ++i) y[r * out_width + i] += bias[i];
      }
    }
  };
  auto normed_rows = [&](const at::Tensor* norm, int64_t stride) {  // stride: the rows' spacing in `normed`
    for (int64_t r = 0; r < rows; ++r) {
      rms_normed(stream.data() + r * width, floats(norm[0]), floats(norm[1])[0], width, normed.data() + r * stride);
    }
  };
  auto add_to_stream = [&]() { for (int64_t i = 0; i < rows * width; ++i) stream[i] += out[i]; };
  std::vector<std::vector<float>> scores;  // per attention task (one row's group, or a part of its positions)
  std::vector<float> weighted, largest, sums;
  for (size_t layer = 0; layer < plan.size(); ++layer) {
    const at::Tensor* norm = &norms[4 * layer];
    if (plan[layer] & 1) {
      normed_rows(norm, width);
      product(4 * layer, normed.data(), qkv.data(), qkv_width);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t h = 0; h < heads + kv_heads; ++h) {
          rotate(qkv.data() + r * qkv_width + h * head_dim, floats(rotary_cos) + r * head_dim,
                 floats(rotary_sin) + r * head_dim, head_dim);
        }
      }
      const at::Tensor &layer_keys = keys[layer], &layer_values = values[layer];
      TORCH_CHECK(layer_keys.stride(3) == 1 && layer_keys.stride(2) == head_dim &&
                      layer_keys.strides() == layer_values.strides() && position + rows <= layer_keys.size(2),
                  "a static cache layer with room at the positions");
      const int64_t head_stride = layer_keys.stride(1);
      auto write_and_attend = [&](auto* key_base, auto* value_base) {
        for (int64_t r = 0; r < rows; ++r) {
          const float* row = qkv.data() + r * qkv_width;
          for (int64_t g = 0; g < kv_heads; ++g) {
            const int64_t at = g * head_stride + (position + r) * head_dim;
            store_row(row + query_width + g * head_dim, head_dim, key_base + at);
            store_row(row + query_width + kv_width + g * head_dim, head_dim, value_base + at);
          }
        }
        // Row r attends to the positions up to its own (causal). Each group's positions are split into a part
        // per thread once there are enough of them, so that every thread has work (three groups on two threads
        // would leave one idle for a third of the time).
        const int64_t parts = position + 1 >= kPositionsToSplit ? std::max<int64_t>(1, at::get_num_threads()) : 1;
        const int64_t tasks = rows * kv_heads * parts;
        weighted.resize(tasks * per_group * head_dim), largest.resize(tasks * per_group), sums.resize(tasks * per_group);
        scores.resize(tasks);
        at::parallel_for(0, tasks, 1, [&](int64_t first_task, int64_t end_task) {
          for (int64_t task = first_task; task < end_task; ++task) {
            const int64_t r = task / (kv_heads * parts), g = task / parts % kv_heads, part = task % parts;
            const int64_t count = position + r + 1;
            attend_part(qkv.data() + r * qkv_width + g * per_group * head_dim, per_group, key_base + g * head_stride,
                        value_base + g * head_stride, head_dim, count * part / parts, count * (part + 1) / parts,
                        head_dim, static_cast<float>(scaling), weighted.data() + task * per_group * head_dim,
                        largest.data() + task * per_group, sums.data() + task * per_group, scores[task]);
          }
        });
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t g = 0; g < kv_heads; ++g) {
            for (int64_t h = 0; h < per_group; ++h) {
              // part i's values of head h: first + i * per_group
              const int64_t first = ((r * kv_heads + g) * parts) * per_group + h;
              merge_parts(weighted.data() + first * head_dim, largest.data() + first, sums.data() + first, parts,
                          per_group, head_dim, attended.data() + r * query_width + (g * per_group + h) * head_dim);
            }
          }
        }
      };
      if (layer_keys.scalar_type() == at::kFloat) {
        write_and_attend(layer_keys.data_ptr<float>(), layer_values.data_ptr<float>());
      } else {
        TORCH_CHECK(layer_keys.scalar_type() == at::kBFloat16, "a float32 or bfloat16 cache");
        write_and_attend(layer_keys.data_ptr<c10::BFloat16>(), layer_values.data_ptr<c10::BFloat16>());
      }
      lengths[layer].data_ptr<int64_t>()[0] += rows;
      product(4 * layer + 1, attended.data(), out.data(), width);
      add_to_stream();
    }
    if (plan[layer] & 2) {
      normed_rows(norm + 2, width);
      product(4 * layer + 2, normed.data(), gate_up.data(), 2 * intermediate);
      for (int64_t r = 0; r < rows; ++r) {
        silu_times(gate_up.data() + r * 2 * intermediate, intermediate, normed.data() + r * intermediate);
      }
      product(4 * layer + 3, normed.data(), out.data(), width);
      add_to_stream();
    }
  }
  return at::from_blob(stream.data(), {rows, width}, at::kFloat).to(hidden.scalar_type(), false, true);
}

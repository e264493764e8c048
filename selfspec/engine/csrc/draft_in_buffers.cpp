// The fused low-bit draft's forward with nothing but its products between buffers: where every product is an
// 8-bit dot product (int8_dot_products.cpp), the norms, rotary, cache writes, attention and activations of a draft
// token -- or of the few rows that read copied tokens -- run as plain loops over float buffers instead of some
// forty tensor operations a layer, each of which costs its dispatch whatever its size (docs/BENCHMARKS.md). The
// stream stays in float32 throughout; keys and values are written to the cache in its own dtype. It computes what
// run_draft_layers computes up to rounding (tests/test_native_layers.py), and the draft only proposes: the full
// model verifies.
#include "draft_token.h"
#include "layer_loops.h"
#include "products.h"
#include "rows_attention.h"

#include <cmath>
#include <vector>

#include "avx2_lanes.h"

using namespace selfspec_lanes;

namespace {

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

const float* floats(const at::Tensor& t) { return t.data_ptr<float>(); }

// The layers over `rows` float rows of `stream` (rows x width) in place, at consecutive positions from `position`
// (rotary rows `rotary_cos` and `rotary_sin`, head_dim floats each per row). The arguments are checked by the callers.
void layers_in_buffers(std::vector<float>& stream, int64_t rows, const float* rotary_cos, const float* rotary_sin,
                       int64_t position, const std::vector<int64_t>& plan, const std::vector<at::Tensor>& norms,
                       const std::vector<int64_t>& kinds, const std::vector<at::Tensor>& weights,
                       const std::vector<at::Tensor>& scales, const std::vector<c10::optional<at::Tensor>>& biases,
                       const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                       const std::vector<at::Tensor>& lengths, int64_t heads, int64_t kv_heads, int64_t head_dim,
                       int64_t intermediate, double scaling) {
  const int64_t width = static_cast<int64_t>(stream.size()) / rows;
  const int64_t query_width = heads * head_dim, kv_width = kv_heads * head_dim, qkv_width = query_width + 2 * kv_width;
  const int64_t widest = std::max({width, query_width, intermediate});
  std::vector<float> normed(rows * widest), qkv(rows * qkv_width), attended(rows * query_width), out(rows * width),
      gate_up(rows * 2 * intermediate);
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
  for (size_t layer = 0; layer < plan.size(); ++layer) {
    const at::Tensor* norm = &norms[4 * layer];
    if (plan[layer] & 1) {
      normed_rows(norm, width);
      product(4 * layer, normed.data(), qkv.data(), qkv_width);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t h = 0; h < heads + kv_heads; ++h) {
          rotate(qkv.data() + r * qkv_width + h * head_dim, rotary_cos + r * head_dim, rotary_sin + r * head_dim, head_dim);
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
        attend_rows(qkv.data(), qkv_width, rows, key_base, value_base, head_stride, position, heads, kv_heads, head_dim,
                    static_cast<float>(scaling), attended.data());
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
}

// The layers' tensors, as the callers check them.
void check_layers(const std::vector<at::Tensor>& norms, const std::vector<int64_t>& kinds,
                  const std::vector<at::Tensor>& weights, const std::vector<at::Tensor>& scales,
                  const std::vector<c10::optional<at::Tensor>>& biases, int64_t width, int64_t heads, int64_t kv_heads,
                  int64_t head_dim, int64_t intermediate) {
  TORCH_CHECK(head_dim % kLanes == 0 && head_dim <= 512 && heads % kv_heads == 0,
              "heads of a multiple of 8 up to 512 wide, whole groups");
  TORCH_CHECK(norms.size() == weights.size() && kinds.size() == weights.size() && scales.size() == weights.size() &&
                  biases.size() == weights.size() && weights.size() % 4 == 0,
              "four norms and products a layer");
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t in = i % 4 == 1 ? heads * head_dim : i % 4 == 3 ? intermediate : width;
    check_int8_dot(kinds[i], weights[i], scales[i], in);
    TORCH_CHECK(!biases[i].has_value() || (biases[i]->scalar_type() == at::kFloat && biases[i]->is_contiguous()),
                "float biases");
  }
  for (const at::Tensor& norm : norms) TORCH_CHECK(norm.scalar_type() == at::kFloat && norm.is_contiguous(), "float norms");
}

void check_cache(const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                 const std::vector<at::Tensor>& lengths, size_t layers) {
  TORCH_CHECK(keys.size() == layers && values.size() == layers && lengths.size() == layers, "a cache layer a layer");
  for (const at::Tensor& length : lengths) TORCH_CHECK(length.scalar_type() == at::kLong, "int64 cache lengths");
}

}  // namespace

at::Tensor run_draft_in_buffers(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& signed_sin,
                           int64_t position, const std::vector<int64_t>& plan, const std::vector<at::Tensor>& norms,
                           const std::vector<int64_t>& kinds, const std::vector<at::Tensor>& weights,
                           const std::vector<at::Tensor>& scales,
                           const std::vector<c10::optional<at::Tensor>>& biases, const std::vector<at::Tensor>& keys,
                           const std::vector<at::Tensor>& values, const std::vector<at::Tensor>& lengths,
                           int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t intermediate, double scaling) {
  c10::InferenceMode inference;
  const int64_t width = hidden.size(-1), rows = hidden.numel() / width;
  TORCH_CHECK(rows >= 1, "rows of the stream");
  TORCH_CHECK(cos.numel() == rows * head_dim && signed_sin.numel() == rows * head_dim, "a rotary row per row");
  check_layers(norms, kinds, weights, scales, biases, width, heads, kv_heads, head_dim, intermediate);
  TORCH_CHECK(norms.size() == 4 * plan.size(), "a plan entry a layer");
  check_cache(keys, values, lengths, plan.size());
  const at::Tensor rotary_cos = cos.to(at::kFloat).contiguous(), rotary_sin = signed_sin.to(at::kFloat).contiguous();
  const at::Tensor input = hidden.to(at::kFloat).contiguous();
  std::vector<float> stream(floats(input), floats(input) + rows * width);
  layers_in_buffers(stream, rows, floats(rotary_cos), floats(rotary_sin), position, plan, norms, kinds, weights, scales,
                    biases, keys, values, lengths, heads, kv_heads, head_dim, intermediate, scaling);
  return at::from_blob(stream.data(), {rows, width}, at::kFloat).to(hidden.scalar_type(), false, true);
}

DraftToken::DraftToken(std::vector<at::Tensor> norms, std::vector<int64_t> kinds, std::vector<at::Tensor> weights,
                       std::vector<at::Tensor> scales, std::vector<c10::optional<at::Tensor>> biases, int64_t heads,
                       int64_t kv_heads, int64_t head_dim, int64_t intermediate, double scaling, at::Tensor embedding,
                       at::Tensor final_norm, at::Tensor final_epsilon_norm, int64_t head_kind, at::Tensor head_packed,
                       at::Tensor head_scales, c10::optional<at::Tensor> head_weight, int64_t candidates)
    : norms_(std::move(norms)), kinds_(std::move(kinds)), weights_(std::move(weights)), scales_(std::move(scales)),
      biases_(std::move(biases)), heads_(heads), kv_heads_(kv_heads), head_dim_(head_dim), intermediate_(intermediate),
      scaling_(scaling), embedding_(std::move(embedding)), final_norm_(std::move(final_norm)),
      final_epsilon_norm_(std::move(final_epsilon_norm)), head_kind_(head_kind), head_packed_(std::move(head_packed)),
      head_scales_(std::move(head_scales)), head_weight_(std::move(head_weight)), candidates_(candidates) {
  const int64_t width = embedding_.size(1);
  TORCH_CHECK(embedding_.dim() == 2 && embedding_.is_contiguous(), "a contiguous (vocabulary, hidden) embedding");
  check_layers(norms_, kinds_, weights_, scales_, biases_, width, heads_, kv_heads_, head_dim_, intermediate_);
  TORCH_CHECK(final_norm_.scalar_type() == at::kFloat && final_norm_.numel() == width && final_norm_.is_contiguous() &&
                  final_epsilon_norm_.scalar_type() == at::kFloat && final_epsilon_norm_.numel() == 1,
              "the final norm's float constants");
  check_int8_dot(head_kind_, head_packed_, head_scales_, width);
}

at::Tensor DraftToken::logits(const at::Tensor& token, int64_t position, const at::Tensor& cos_table,
                              const at::Tensor& sin_table, const std::vector<int64_t>& plan,
                              const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                              const std::vector<at::Tensor>& lengths) const {
  c10::InferenceMode inference;
  TORCH_CHECK(token.numel() == 1 && token.scalar_type() == at::kLong, "one int64 token");
  TORCH_CHECK(cos_table.scalar_type() == at::kFloat && cos_table.dim() == 2 && cos_table.size(1) == head_dim_ &&
                  cos_table.is_contiguous() && sin_table.sizes() == cos_table.sizes() &&
                  sin_table.scalar_type() == at::kFloat && sin_table.is_contiguous(),
              "float rotary tables (positions, head_dim), the sine's first half negated");
  TORCH_CHECK(position >= 0 && position < cos_table.size(0), "no rotary row for position ", position);
  TORCH_CHECK(norms_.size() == 4 * plan.size(), "a plan entry a layer");
  check_cache(keys, values, lengths, plan.size());
  const int64_t id = token.item<int64_t>(), width = embedding_.size(1);
  TORCH_CHECK(id >= 0 && id < embedding_.size(0), "token ", id, " outside the vocabulary");
  const at::Tensor row = embedding_[id].to(at::kFloat);
  std::vector<float> stream(floats(row), floats(row) + width);
  layers_in_buffers(stream, 1, floats(cos_table) + position * head_dim_, floats(sin_table) + position * head_dim_,
                    position, plan, norms_, kinds_, weights_, scales_, biases_, keys, values, lengths, heads_, kv_heads_,
                    head_dim_, intermediate_, scaling_);
  at::Tensor normed = at::empty({1, width}, at::kFloat);
  rms_normed(stream.data(), floats(final_norm_), floats(final_epsilon_norm_)[0], width, normed.data_ptr<float>());
  if (head_weight_.has_value()) {
    return screened_logits(normed, head_kind_, head_packed_, head_scales_, *head_weight_, candidates_).view(-1);
  }
  return int8_dot_mm(head_kind_, normed, head_packed_, head_scales_).view(-1);
}

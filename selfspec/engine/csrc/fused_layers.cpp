// The fused low-bit draft's layer loop (fused_sublayers.py) in C++: the same ATen operations in the same
// order, so the same values bit for bit, without the Python call around each operation (native_layers.py).
#include <torch/extension.h>

#include <vector>

namespace {

constexpr int64_t kInt4PackCpu = 0;  // at::_weight_int4pack_mm_for_cpu (lowbit._int4pack on a CPU)
constexpr int64_t kInt8Pack = 1;     // at::_weight_int8pack_mm (lowbit._int8pack)

struct Products {
  const std::vector<int64_t>& kinds;
  const std::vector<int64_t>& groups;
  const std::vector<at::Tensor>& weights;
  const std::vector<at::Tensor>& scales;  // in the product's activation dtype
  const std::vector<c10::optional<at::Tensor>>& biases;

  // LowBitLinear.native: the product in the kernel's dtype, plus the bias.
  at::Tensor operator()(size_t index, const at::Tensor& x) const {
    const at::Tensor& scale = scales[index];
    const at::Tensor input = x.scalar_type() == scale.scalar_type() ? x : x.to(scale.scalar_type());
    at::Tensor y = kinds[index] == kInt4PackCpu
        ? at::_weight_int4pack_mm_for_cpu(input, weights[index], groups[index], scale)
        : at::_weight_int8pack_mm(input, weights[index], scale);
    const auto& bias = biases[index];
    return bias.has_value() ? y + *bias : y;
  }
};

// rms_norms.rms_normed
at::Tensor rms_normed(const at::Tensor& hidden, const at::Tensor& scaled_weight, const at::Tensor& epsilon_norm) {
  const at::Tensor length = at::hypot(at::linalg_vector_norm(hidden, 2, {-1}, true), epsilon_norm);
  return hidden / length * scaled_weight;
}

// fused_sublayers._residual
at::Tensor residual(const at::Tensor& hidden, at::Tensor out) {
  if (out.scalar_type() != hidden.scalar_type() && hidden.scalar_type() != at::kFloat) {
    out = out.to(hidden.scalar_type());
  }
  return hidden + out;
}

}  // namespace

// hidden: the stream's rows (q, d) at positions position..position+q-1. Per layer, 4 norm tensors (input
// weight, input epsilon, MLP weight, MLP epsilon) and 4 products (q/k/v, o, gate/up, down); `plan` holds a
// layer's sublayers to run (bit 0 attention, bit 1 MLP). The static cache's buffers are written at
// `position` and read up to the last new position, as PositionalCache.update does while `attending`.
at::Tensor run_layers(at::Tensor hidden, const at::Tensor& cos, const at::Tensor& signed_sin,
                      const c10::optional<at::Tensor>& mask, int64_t position, const std::vector<int64_t>& plan,
                      const std::vector<at::Tensor>& norms, const std::vector<int64_t>& kinds,
                      const std::vector<int64_t>& groups, const std::vector<at::Tensor>& weights,
                      const std::vector<at::Tensor>& scales, const std::vector<c10::optional<at::Tensor>>& biases,
                      const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                      const std::vector<at::Tensor>& lengths, int64_t heads, int64_t kv_heads, int64_t head_dim,
                      double scaling, bool pack_one_query) {
  c10::InferenceMode inference;
  const Products product{kinds, groups, weights, scales, biases};
  const int64_t width = hidden.size(0);
  const int64_t query_key_heads = heads + kv_heads;
  const int64_t attended = position + width;
  const bool packed = width == 1 && pack_one_query && heads != kv_heads;
  TORCH_CHECK(norms.size() == 4 * plan.size() && weights.size() == 4 * plan.size(), "four norms and products a layer");
  for (size_t i = 0; i < plan.size(); ++i) {
    if (plan[i] & 1) {  // fused_sublayers.fused_attention_sublayer
      at::Tensor qkv = product(4 * i, rms_normed(hidden, norms[4 * i], norms[4 * i + 1]));
      if (qkv.scalar_type() != hidden.scalar_type()) qkv = qkv.to(hidden.scalar_type());
      const at::Tensor all_heads = qkv.view({1, width, query_key_heads + kv_heads, head_dim}).transpose(1, 2);
      const auto parts = all_heads.split_with_sizes({query_key_heads, kv_heads}, 1);
      const at::Tensor& query_keys = parts[0];
      const at::Tensor rotated = query_keys * cos + query_keys.roll({head_dim / 2}, {-1}) * signed_sin;
      const auto rotated_parts = rotated.split_with_sizes({heads, kv_heads}, 1);
      keys[i].narrow(2, position, width).copy_(rotated_parts[1]);
      values[i].narrow(2, position, width).copy_(parts[1]);
      lengths[i].add_(width);
      const at::Tensor layer_keys = keys[i].narrow(2, 0, attended);
      const at::Tensor layer_values = values[i].narrow(2, 0, attended);
      at::Tensor out;
      if (packed) {  // attention_forms.attend, packed
        const at::Tensor rows = rotated_parts[0].reshape({1, kv_heads, heads / kv_heads, head_dim});
        out = at::scaled_dot_product_attention(rows, layer_keys, layer_values, mask, 0.0, false, scaling)
                  .reshape({1, heads, 1, head_dim});
      } else {
        out = at::scaled_dot_product_attention(rotated_parts[0], layer_keys, layer_values, mask, 0.0, false, scaling,
                                               heads != kv_heads);
      }
      out = width == 1 ? out.view({width, heads * head_dim}) : out.transpose(1, 2).reshape({width, heads * head_dim});
      hidden = residual(hidden, product(4 * i + 1, out));
    }
    if (plan[i] & 2) {  // fused_sublayers.fused_mlp_sublayer
      const auto gate_up = product(4 * i + 2, rms_normed(hidden, norms[4 * i + 2], norms[4 * i + 3])).chunk(2, -1);
      hidden = residual(hidden, product(4 * i + 3, at::silu(gate_up[0]).mul_(gate_up[1])));
    }
  }
  return hidden;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  // Without the GIL, as torch's own operations run: other requests' threads go on meanwhile.
  module.def("run_layers", &run_layers, "The fused low-bit draft's layers (selfspec/engine/native_layers.py)",
             pybind11::call_guard<pybind11::gil_scoped_release>());
}

// Two layer loops of the walk (walk.py) in C++: the fused low-bit draft's (fused_sublayers.py) and the full
// model's plain Llama-family layers as the engine runs them (architectures.direct_sublayers, with the products
// row_products.py chose). The same ATen operations in the same order, so the same values bit for bit,
// without the Python call around each operation (native_layers.py).
#include "layer_loops.h"
#include "rows_attention.h"
#include "products.h"

#include <ATen/Parallel.h>

#include <algorithm>
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
    // torch's kernels take activations in their scales' dtype; the 8-bit dot products take either as it is.
    auto in_scale_dtype = [&] { return x.scalar_type() == scale.scalar_type() ? x : x.to(scale.scalar_type()); };
    at::Tensor y;
    switch (kinds[index]) {
      case kInt4PackCpu: y = at::_weight_int4pack_mm_for_cpu(in_scale_dtype(), weights[index], groups[index], scale); break;
      case kInt8Pack: y = at::_weight_int8pack_mm(in_scale_dtype(), weights[index], scale); break;
      default: y = int8_dot_mm(kinds[index], x, weights[index], scale);  // it refuses a kind it does not make
    }
    const auto& bias = biases[index];
    return bias.has_value() ? y + *bias : y;
  }
};

// rms_norms.rms_normed
at::Tensor rms_normed(const at::Tensor& hidden, const at::Tensor& scaled_weight, const at::Tensor& epsilon_norm) {
  const at::Tensor length = at::hypot(at::linalg_vector_norm(hidden, 2, {-1}, true), epsilon_norm);
  return hidden / length * scaled_weight;
}

// architectures.rotated
at::Tensor rotated(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& signed_sin) {
  return x * cos + x.roll({x.size(-1) / 2}, {-1}) * signed_sin;
}

// fused_sublayers._residual
at::Tensor residual(const at::Tensor& hidden, at::Tensor out) {
  if (out.scalar_type() != hidden.scalar_type() && hidden.scalar_type() != at::kFloat) {
    out = out.to(hidden.scalar_type());
  }
  return hidden + out;
}

struct Heads {
  at::Tensor query, key, value;  // (1, heads, q, d), the first two rotated
};

// One product's q/k/v side by side, (q, (heads + 2 kv_heads) d) or (1, q, ...): split into heads, queries
// and keys rotated together (elementwise, so the same values as rotating each).
Heads rotated_heads(const at::Tensor& qkv, int64_t width, int64_t heads, int64_t kv_heads, int64_t head_dim,
                    const at::Tensor& cos, const at::Tensor& signed_sin) {
  const auto parts = qkv.view({1, width, -1, head_dim}).transpose(1, 2).split_with_sizes({heads + kv_heads, kv_heads}, 1);
  const auto rotated_parts = rotated(parts[0], cos, signed_sin).split_with_sizes({heads, kv_heads}, 1);
  return {rotated_parts[0], rotated_parts[1], parts[1]};
}

// The new keys and values written at `position` into a static cache layer's buffers, then attention
// (1, heads, q, d) over their filled prefix (PositionalCache.update while `attending`, then
// attention_forms.attend: one query packed as its groups' rows where `pack_one_query`, else sdpa's grouped form;
// or, `exact_rows`, each row over the positions up to its own, as attention_forms.exact_rows_attention does).
at::Tensor cached_attention(const Heads& new_heads, const at::Tensor& keys, const at::Tensor& values,
                            const at::Tensor& length, int64_t position, const c10::optional<at::Tensor>& mask,
                            int64_t heads, int64_t kv_heads, int64_t head_dim, double scaling, bool pack_one_query,
                            bool exact_rows = false) {
  const int64_t width = new_heads.query.size(2);
  keys.narrow(2, position, width).copy_(new_heads.key);
  values.narrow(2, position, width).copy_(new_heads.value);
  length.add_(width);
  if (exact_rows) return attend_cached_rows(new_heads.query, keys, values, position, scaling);
  const at::Tensor layer_keys = keys.narrow(2, 0, position + width);
  const at::Tensor layer_values = values.narrow(2, 0, position + width);
  if (width == 1 && pack_one_query && heads != kv_heads) {
    const at::Tensor rows = new_heads.query.reshape({1, kv_heads, heads / kv_heads, head_dim});
    return at::scaled_dot_product_attention(rows, layer_keys, layer_values, mask, 0.0, false, scaling)
        .reshape({1, heads, 1, head_dim});
  }
  return at::scaled_dot_product_attention(new_heads.query, layer_keys, layer_values, mask, 0.0, false, scaling,
                                          heads != kv_heads);
}

}  // namespace

// hidden: the stream's rows (q, d) at positions position..position+q-1. Per layer, 4 norm tensors (input
// weight, input epsilon, MLP weight, MLP epsilon) and 4 products (q/k/v, o, gate/up, down); `plan` holds a
// layer's sublayers to run (bit 0 attention, bit 1 MLP). The static cache's buffers are written at
// `position` and read up to the last new position, as PositionalCache.update does while `attending`.
at::Tensor run_draft_layers(at::Tensor hidden, const at::Tensor& cos, const at::Tensor& signed_sin,
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
  TORCH_CHECK(norms.size() == 4 * plan.size() && weights.size() == 4 * plan.size(), "four norms and products a layer");
  for (size_t i = 0; i < plan.size(); ++i) {
    if (plan[i] & 1) {  // fused_sublayers.fused_attention_sublayer
      at::Tensor qkv = product(4 * i, rms_normed(hidden, norms[4 * i], norms[4 * i + 1]));
      if (qkv.scalar_type() != hidden.scalar_type()) qkv = qkv.to(hidden.scalar_type());
      at::Tensor out = cached_attention(rotated_heads(qkv, width, heads, kv_heads, head_dim, cos, signed_sin),
                                        keys[i], values[i], lengths[i], position, mask, heads, kv_heads, head_dim,
                                        scaling, pack_one_query);
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


// --- the full model's layers -------------------------------------------------------------------------

namespace {

// The products row_products.py chooses among (narrow_linear.py), by kind.
constexpr int64_t kLinear = 0, kThreadSplit = 1, kWeightMajor = 2, kOneDnn = 3, kOneDnnTwoRows = 4, kBf16Pairs = 5;

std::vector<int64_t> rows_shape(const at::Tensor& x, int64_t out_features) {
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 1);
  shape.push_back(out_features);
  return shape;
}

at::Tensor plus_bias(const at::Tensor& out, const c10::optional<at::Tensor>& bias) {
  return bias.has_value() ? out + *bias : out;
}

// narrow_linear.thread_split_linear (with _thread_split_rows)
at::Tensor thread_split(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  const int64_t in = x.size(-1), rows = x.numel() / in, out_features = weight.size(0);
  const int64_t slabs = std::max<int64_t>(2, at::get_num_threads());
  if (rows == 1 && out_features % slabs == 0 && weight.is_contiguous() && x.is_contiguous()) {
    const at::Tensor columns = x.as_strided({slabs, in, 1}, {0, 1, in});
    const at::Tensor out = at::bmm(weight.view({slabs, -1, in}), columns).view(rows_shape(x, out_features));
    return plus_bias(out, bias);
  }
  const at::Tensor columns = x.reshape({rows, in}).t().contiguous();
  const int64_t per_slab = out_features / slabs, split = slabs * per_slab, width = columns.size(1);
  at::Tensor out = at::empty({out_features, width}, columns.options());
  if (per_slab) {
    at::Tensor slab_out = out.narrow(0, 0, split).view({slabs, per_slab, width});
    at::bmm_out(slab_out, weight.narrow(0, 0, split).view({slabs, per_slab, -1}), columns.expand({slabs, in, width}));
  }
  if (split < out_features) {
    at::Tensor rest = out.narrow(0, split, out_features - split);
    at::mm_out(rest, weight.narrow(0, split, out_features - split), columns);
  }
  out = out.t().contiguous();
  return plus_bias(out, bias).view(rows_shape(x, out_features));
}

// narrow_linear.weight_major_linear
at::Tensor weight_major(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  const int64_t in = x.size(-1), rows = x.numel() / in;
  at::Tensor flat = x.reshape({rows, in});
  if (rows == 1) flat = at::cat({flat, at::zeros({1, in}, flat.options())});
  const at::Tensor out = at::mm(weight, flat.t()).narrow(1, 0, rows).t().contiguous();
  return plus_bias(out, bias).view(rows_shape(x, weight.size(0)));
}

// narrow_linear.onednn_linear: oneDNN's matmul, on the weight or its packed copy
at::Tensor onednn(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow("mkldnn::_linear_pointwise", "");
  torch::jit::Stack stack{x.reshape({-1, x.size(-1)}), weight, bias, std::string("none"),
                          c10::List<c10::optional<at::Scalar>>(), c10::optional<std::string>(std::string(""))};
  op.callBoxed(&stack);
  return stack.back().toTensor().view(rows_shape(x, weight.size(0)));
}

// narrow_linear.onednn_two_rows_linear: one row as two, the second zero
at::Tensor onednn_two_rows(const at::Tensor& x, const at::Tensor& weight, const c10::optional<at::Tensor>& bias) {
  const int64_t in = x.size(-1);
  if (x.numel() != in) return onednn(x, weight, bias);
  const at::Tensor flat = x.reshape({1, in});
  return onednn(at::cat({flat, at::zeros({1, in}, flat.options())}), weight, bias).narrow(0, 0, 1)
      .view(rows_shape(x, weight.size(0)));
}

struct FullProducts {
  const std::vector<int64_t>& kinds;
  const std::vector<at::Tensor>& weights;
  const std::vector<c10::optional<at::Tensor>>& biases;

  at::Tensor operator()(size_t index, const at::Tensor& x) const {
    const at::Tensor& weight = weights[index];
    const auto& bias = biases[index];
    switch (kinds[index]) {
      case kLinear: return at::linear(x, weight, bias);
      case kThreadSplit: return thread_split(x, weight, bias);
      case kWeightMajor: return weight_major(x, weight, bias);
      case kOneDnn: return onednn(x, weight, bias);
      case kOneDnnTwoRows: return onednn_two_rows(x, weight, bias);
      case kBf16Pairs: return bf16_pairs_mm(x, weight, bias);  // narrow_linear.bf16_pairs_linear
      default: TORCH_CHECK(false, "no product of kind ", kinds[index]);
    }
  }
};

// rms_norms.by_length: float32 streams normed as they are; others normed in float32 and rounded once.
at::Tensor norm_by_length(const at::Tensor& hidden, const at::Tensor& scaled_weight, const at::Tensor& epsilon_norm) {
  if (hidden.scalar_type() == at::kFloat) return rms_normed(hidden, scaled_weight, epsilon_norm);
  return rms_normed(hidden.to(at::kFloat), scaled_weight, epsilon_norm).to(hidden.scalar_type());
}

}  // namespace

// hidden (1, q, d) at positions position..position+q-1 through plain layers as architectures.direct_sublayers runs
// them, with norms "by length" and attention in the forms attention_forms.with_forms takes directly (one query:
// grouped or packed, unmasked; several: grouped, under a boolean mask). Per layer: 4 norm tensors as in
// run_draft_layers, and 7 product slots (q/k/v or their join and two unused, o, gate/up or their join and one unused,
// down); `joined` holds bit 0 for a joined q/k/v, bit 1 for a joined gate/up.
at::Tensor run_full_layers(at::Tensor hidden, const at::Tensor& cos, const at::Tensor& signed_sin,
                           const c10::optional<at::Tensor>& mask, int64_t position, const std::vector<int64_t>& plan,
                           const std::vector<at::Tensor>& norms, const std::vector<int64_t>& kinds,
                           const std::vector<at::Tensor>& weights,
                           const std::vector<c10::optional<at::Tensor>>& biases, const std::vector<int64_t>& joined,
                           const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                           const std::vector<at::Tensor>& lengths, int64_t heads, int64_t kv_heads, int64_t head_dim,
                           int64_t intermediate, double scaling, bool pack_one_query, bool exact_rows) {
  c10::InferenceMode inference;
  const FullProducts product{kinds, weights, biases};
  const int64_t width = hidden.size(1);
  TORCH_CHECK(heads != kv_heads, "grouped heads (with_forms hands others to transformers)");
  TORCH_CHECK(exact_rows || (width == 1 ? !mask.has_value() : mask.has_value()), "one query unmasked, several masked");
  TORCH_CHECK(norms.size() == 4 * plan.size() && weights.size() == 7 * plan.size(), "4 norms and 7 products a layer");
  const std::vector<int64_t> heads_shape{1, width, -1, head_dim};
  for (size_t i = 0; i < plan.size(); ++i) {
    const size_t slot = 7 * i;
    if (plan[i] & 1) {
      const at::Tensor normed = norm_by_length(hidden, norms[4 * i], norms[4 * i + 1]);
      Heads new_heads;
      if (joined[i] & 1) {
        new_heads = rotated_heads(product(slot, normed), width, heads, kv_heads, head_dim, cos, signed_sin);
      } else {
        new_heads.query = rotated(product(slot, normed).view(heads_shape).transpose(1, 2), cos, signed_sin);
        new_heads.key = rotated(product(slot + 1, normed).view(heads_shape).transpose(1, 2), cos, signed_sin);
        new_heads.value = product(slot + 2, normed).view(heads_shape).transpose(1, 2);
      }
      at::Tensor out = cached_attention(new_heads, keys[i], values[i], lengths[i], position, mask, heads, kv_heads,
                                        head_dim, scaling, pack_one_query, exact_rows);
      out = out.transpose(1, 2).contiguous();  // with_forms' return
      hidden = hidden + product(slot + 3, out.reshape({1, width, -1}).contiguous());
    }
    if (plan[i] & 2) {
      const at::Tensor normed = norm_by_length(hidden, norms[4 * i + 2], norms[4 * i + 3]);
      at::Tensor gate, up;
      if (joined[i] & 2) {
        const auto parts = product(slot + 4, normed).split_with_sizes({intermediate, intermediate}, -1);
        gate = parts[0], up = parts[1];
      } else {
        gate = product(slot + 4, normed), up = product(slot + 5, normed);
      }
      hidden = hidden + product(slot + 6, at::silu(gate) * up);
    }
  }
  return hidden;
}

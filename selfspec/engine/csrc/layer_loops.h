// The walk's two layer loops in C++ (layer_loops.cpp; their arguments are described there).
#pragma once
#include <torch/extension.h>

#include <vector>

at::Tensor run_draft_layers(at::Tensor hidden, const at::Tensor& cos, const at::Tensor& signed_sin,
                            const c10::optional<at::Tensor>& mask, int64_t position, const std::vector<int64_t>& plan,
                            const std::vector<at::Tensor>& norms, const std::vector<int64_t>& kinds,
                            const std::vector<int64_t>& groups, const std::vector<at::Tensor>& weights,
                            const std::vector<at::Tensor>& scales, const std::vector<c10::optional<at::Tensor>>& biases,
                            const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                            const std::vector<at::Tensor>& lengths, int64_t heads, int64_t kv_heads, int64_t head_dim,
                            double scaling, bool pack_one_query);

at::Tensor run_full_layers(at::Tensor hidden, const at::Tensor& cos, const at::Tensor& signed_sin,
                           const c10::optional<at::Tensor>& mask, int64_t position, const std::vector<int64_t>& plan,
                           const std::vector<at::Tensor>& norms, const std::vector<int64_t>& kinds,
                           const std::vector<at::Tensor>& weights,
                           const std::vector<c10::optional<at::Tensor>>& biases, const std::vector<int64_t>& joined,
                           const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                           const std::vector<at::Tensor>& lengths, int64_t heads, int64_t kv_heads, int64_t head_dim,
                           int64_t intermediate, double scaling, bool pack_one_query, bool exact_rows);

// Rows through the fused draft's layers where every product is int8_dot_mm's (draft_in_buffers.cpp): hidden (q, d) at
// consecutive positions from `position`, each attending causally; float norms and biases; returns (q, d) in
// hidden's dtype.
at::Tensor run_draft_in_buffers(const at::Tensor& hidden, const at::Tensor& cos, const at::Tensor& signed_sin,
                           int64_t position, const std::vector<int64_t>& plan, const std::vector<at::Tensor>& norms,
                           const std::vector<int64_t>& kinds, const std::vector<at::Tensor>& weights,
                           const std::vector<at::Tensor>& scales, const std::vector<c10::optional<at::Tensor>>& biases,
                           const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                           const std::vector<at::Tensor>& lengths, int64_t heads, int64_t kv_heads, int64_t head_dim,
                           int64_t intermediate, double scaling);

// A draft token from its id to its logits in one call (draft_in_buffers.cpp): the embedding row, the fused layers
// in buffers, the final norm and the head, with every tensor they read gathered once. The walk's way costs some
// thirty tensor operations around the layers, and after a token has streamed its weights through the caches each
// costs tens of microseconds (docs/BENCHMARKS.md).
#pragma once
#include <torch/extension.h>

#include <vector>

class DraftToken {
 public:
  // The layers' tensors as run_draft_in_buffers takes them; `embedding` (vocabulary, hidden); the final norm's
  // float constants (rms_norms.norm_constants); a head of int8_dot_mm's kinds, screened (screened_logits) where
  // `head_weight` is given.
  DraftToken(std::vector<at::Tensor> norms, std::vector<int64_t> kinds, std::vector<at::Tensor> weights,
             std::vector<at::Tensor> scales, std::vector<c10::optional<at::Tensor>> biases, int64_t heads,
             int64_t kv_heads, int64_t head_dim, int64_t intermediate, double scaling, at::Tensor embedding,
             at::Tensor final_norm, at::Tensor final_epsilon_norm, int64_t head_kind, at::Tensor head_packed,
             at::Tensor head_scales, c10::optional<at::Tensor> head_weight, int64_t candidates);
  // Logits (vocabulary,) in float32 for `token` (one int64) at `position`, its keys written to the cache; the rotary
  // rows of positions 0..n-1 in `cos_table` and `sin_table` (float (n, head_dim), as architectures.rolled_rotary
  // gives them).
  at::Tensor logits(const at::Tensor& token, int64_t position, const at::Tensor& cos_table, const at::Tensor& sin_table,
                    const std::vector<int64_t>& plan, const std::vector<at::Tensor>& keys,
                    const std::vector<at::Tensor>& values, const std::vector<at::Tensor>& lengths) const;

 private:
  std::vector<at::Tensor> norms_;
  std::vector<int64_t> kinds_;
  std::vector<at::Tensor> weights_, scales_;
  std::vector<c10::optional<at::Tensor>> biases_;
  int64_t heads_, kv_heads_, head_dim_, intermediate_;
  double scaling_;
  at::Tensor embedding_, final_norm_, final_epsilon_norm_;
  int64_t head_kind_;
  at::Tensor head_packed_, head_scales_;
  c10::optional<at::Tensor> head_weight_;
  int64_t candidates_;
};

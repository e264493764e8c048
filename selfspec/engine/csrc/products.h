// Products of the engine's C++ extension that the layer loops call too (int8_dot_products.cpp).
#pragma once
#include <torch/extension.h>

// Low-bit weights times activations rounded to int8 per group of 32, by 8-bit dot instructions, by kind (the
// numbers lowbit.py gives them): int4 weights in lowbit.pack_int4_for_int8_dot's layout with per-group byte codes of scales and
// zeros, int8 weights in pack_int8_for_int8_dot's with a scale a row, or int2 weights (a draft head's screen) in
// pack_int2_for_int8_dot's with per-group scales and lows; by AVX512-VNNI, or by AVX2.
constexpr int64_t kInt4Int8Dot = 2, kInt8Int8Dot = 3, kInt4Int8DotAvx2 = 4, kInt8Int8DotAvx2 = 5;
constexpr int64_t kInt2Int8Dot = 6, kInt2Int8DotAvx2 = 7;

// x (rows, in) float or bfloat16: (rows, out) in x's dtype.
at::Tensor int8_dot_mm(int64_t kind, const at::Tensor& x, const at::Tensor& packed, const at::Tensor& scales);
// The same on raw float rows (x: rows x in, out: rows x out), for loops that keep their activations in buffers.
void int8_dot_rows(int64_t kind, const float* x, int64_t rows, const at::Tensor& packed, const at::Tensor& scales,
                   float* out);
// Refuses weights not packed so, or a CPU without the instructions.
void check_int8_dot(int64_t kind, const at::Tensor& packed, const at::Tensor& scales, int64_t in_features);

// bfloat16 weights in narrow_linear.bf16_pairs_packed's layout times x (..., in) bfloat16, plus an optional bias:
// (..., out) bfloat16, each row summed alike whatever rows share the call (bf16_pair_products.cpp).
at::Tensor bf16_pairs_mm(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias);
// Whether this CPU has AVX512-BF16's pair dot products.
bool bf16_pairs_available();

// A draft head's logits (..., vocabulary) in float32: hidden (..., in) through a low-bit screen (int8_dot_mm's
// kinds and layouts), then each row's `candidates` best scored again from `weight`, the model's own head
// (vocabulary, in) in float32, bfloat16 or float16 (screened_head.cpp).
at::Tensor screened_logits(const at::Tensor& hidden, int64_t kind, const at::Tensor& packed, const at::Tensor& scales,
                           const at::Tensor& weight, int64_t candidates);

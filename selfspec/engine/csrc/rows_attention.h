// Attention of a forward's consecutive rows over a static cache layer, each row over exactly the positions up to
// its own (rows_attention.cpp).
#pragma once
#include <torch/extension.h>

// queries: rows of (heads * head_dim) floats, `query_stride` apart, for positions position..position+rows-1; keys, values: a cache layer's
// buffers, kv_heads heads `head_stride` apart, each a row of head_dim per position; out: rows x (heads * head_dim).
// Row r's result depends on nothing but its own query and the first position + r + 1 keys and values: it is the same
// whatever other rows the forward holds, and however many threads run it.
// `eight_lanes`: AVX2 alone even where the CPU has more (to test that way on any machine).
template <typename Scalar>
void attend_rows(const float* queries, int64_t query_stride, int64_t rows, const Scalar* keys, const Scalar* values, int64_t head_stride,
                 int64_t position, int64_t heads, int64_t kv_heads, int64_t head_dim, float scaling, float* out,
                 bool eight_lanes = false);

// attend_rows on tensors: query (1, heads, q, d) at positions position..position+q-1 over a cache layer's buffers
// (1, kv_heads, capacity, d) in the query's dtype; returns (1, heads, q, d) in that dtype.
at::Tensor attend_cached_rows(const at::Tensor& query, const at::Tensor& keys, const at::Tensor& values,
                              int64_t position, double scaling, bool eight_lanes = false);

// Whether this CPU runs attend_rows (AVX2 and FMA; F16C for float16).
bool rows_attention_available();

// bfloat16 weights times a few bfloat16 rows by AVX512-BF16's pair dot products (narrow_linear.bf16_pairs_linear).
//
// Why not oneDNN's product: its bfloat16 one-row kernel sums a row in another order than its several-row kernel, so a
// verification's rows differ from one-token steps unless one row runs as two, and each call costs ~10 us before any
// weight is read (row_products.py, docs/BENCHMARKS.md). Here every row is summed in one order, whatever rows share
// the call: one accumulator per row and 16 outputs, over the pairs of inputs in turn, plus the bias, rounded once.
// So a verification's rows get exactly what one-token steps get, by construction.
//
// Layout (narrow_linear.bf16_pairs_packed): blocks of 16 outputs; per block and pair of inputs (2p, 2p + 1), 32
// values: output o's two weights at 2o, 2o + 1. One instruction adds a pair of inputs times 16 outputs' weights.
// A pass holds a tile of up to kTileRows rows x kTileBlocks blocks of accumulators in registers, so each weight
// loaded serves every row of the pass and each broadcast input every block: the weights stream from memory once for
// up to kTileRows rows, and over more rows the tile's weights (a few hundred KB) are read again from the cache.
#include "products.h"

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <array>
#include <utility>

#define SELFSPEC_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512bf16")))

namespace {

constexpr int64_t kBlock = 16, kPairValues = 32;  // outputs a block; bfloat16 values a block's pair of inputs
constexpr int kTileRows = 9, kTileBlocks = 3;     // 27 accumulators, 3 weights and a broadcast: 31 of 32 registers
constexpr int64_t kPrefetchValues = 1024;         // 2 KB ahead in each block's stream, into L2

template <int Rows, int Blocks>
SELFSPEC_AVX512_BF16 void tile(const uint16_t* weights, int64_t pairs, const int32_t* x_pairs, const float* bias,
                               c10::BFloat16* out, int64_t out_features) {
  __m512 sums[Rows][Blocks];
#pragma GCC unroll 8
  for (int m = 0; m < Rows; ++m)
#pragma GCC unroll 8
    for (int b = 0; b < Blocks; ++b) sums[m][b] = _mm512_setzero_ps();
  const int64_t block_values = pairs * kPairValues;
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh w[Blocks];
#pragma GCC unroll 8
    for (int b = 0; b < Blocks; ++b) {
      const uint16_t* at = weights + b * block_values + p * kPairValues;
      _mm_prefetch(reinterpret_cast<const char*>(at + kPrefetchValues), _MM_HINT_T1);
      w[b] = (__m512bh)_mm512_loadu_si512(at);
    }
#pragma GCC unroll 8
    for (int m = 0; m < Rows; ++m) {
      const __m512bh x = (__m512bh)_mm512_set1_epi32(x_pairs[m * pairs + p]);
#pragma GCC unroll 8
      for (int b = 0; b < Blocks; ++b) sums[m][b] = _mm512_dpbf16_ps(sums[m][b], w[b], x);
    }
  }
  for (int b = 0; b < Blocks; ++b) {
    const __m512 added = bias == nullptr ? _mm512_setzero_ps() : _mm512_loadu_ps(bias + b * kBlock);
    for (int m = 0; m < Rows; ++m)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + m * out_features + b * kBlock),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_add_ps(sums[m][b], added)));
  }
}

using Tile = void (*)(const uint16_t*, int64_t, const int32_t*, const float*, c10::BFloat16*, int64_t);

template <int Rows, int... B>
constexpr std::array<Tile, kTileBlocks> tiles_of_rows(std::integer_sequence<int, B...>) {
  return {&tile<Rows, B + 1>...};
}

template <int... R>
constexpr std::array<std::array<Tile, kTileBlocks>, kTileRows> all_tiles(std::integer_sequence<int, R...>) {
  return {tiles_of_rows<R + 1>(std::make_integer_sequence<int, kTileBlocks>{})...};
}

// Rows split into passes as even as possible (17: 9, 8), so no pass runs with few accumulators.
int64_t pass_rows(int64_t rows) {
  const int64_t passes = (rows + kTileRows - 1) / kTileRows;
  return (rows + passes - 1) / passes;
}

}  // namespace

bool bf16_pairs_available() {
  // Asked once: every product call checks it (a decoding step makes ~120).
  static const bool available = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512bf16");
  return available;
}

at::Tensor bf16_pairs_mm(const at::Tensor& x, const at::Tensor& packed, const c10::optional<at::Tensor>& bias) {
  TORCH_CHECK(bf16_pairs_available(), "this CPU lacks AVX512-BF16");
  TORCH_CHECK(x.scalar_type() == at::kBFloat16, "bfloat16 activations");
  TORCH_CHECK(packed.dim() == 3 && packed.size(2) == kPairValues && packed.scalar_type() == at::kBFloat16 &&
                  packed.is_contiguous(),
              "weights packed by narrow_linear.bf16_pairs_packed");
  const int64_t blocks = packed.size(0), pairs = packed.size(1), out_features = blocks * kBlock;
  const int64_t in = x.size(-1), rows = x.numel() / std::max<int64_t>(in, 1);
  TORCH_CHECK(in == 2 * pairs, "the input has ", in, " features; the weights take ", 2 * pairs);
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - 1);
  shape.push_back(out_features);
  const at::Tensor input = x.contiguous();
  at::Tensor out = at::empty(shape, input.options());
  if (rows == 0) return out;
  at::Tensor bias_float;
  if (bias.has_value()) {
    TORCH_CHECK(bias->numel() == out_features, "a bias of ", out_features, " values");
    bias_float = bias->to(at::kFloat).contiguous();
  }
  const float* bias_data = bias.has_value() ? bias_float.data_ptr<float>() : nullptr;
  const auto* x_pairs = reinterpret_cast<const int32_t*>(input.data_ptr<c10::BFloat16>());
  const auto* weights = reinterpret_cast<const uint16_t*>(packed.data_ptr<c10::BFloat16>());
  c10::BFloat16* out_data = out.data_ptr<c10::BFloat16>();
  static constexpr auto kTiles = all_tiles(std::make_integer_sequence<int, kTileRows>{});
  const int64_t per_pass = pass_rows(rows), tiles = (blocks + kTileBlocks - 1) / kTileBlocks;
  at::parallel_for(0, tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t first_block = t * kTileBlocks, count = std::min<int64_t>(kTileBlocks, blocks - first_block);
      const uint16_t* tile_weights = weights + first_block * pairs * kPairValues;
      const float* tile_bias = bias_data == nullptr ? nullptr : bias_data + first_block * kBlock;
      for (int64_t first = 0; first < rows; first += per_pass) {
        const int64_t pass = std::min(per_pass, rows - first);
        kTiles[pass - 1][count - 1](tile_weights, pairs, x_pairs + first * pairs, tile_bias,
                                    out_data + first * out_features + first_block * kBlock, out_features);
      }
    }
  });
  return out;
}

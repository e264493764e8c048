// The engine's C++ extension as Python sees it (native_build.py builds it).
#include "draft_token.h"
#include "layer_loops.h"
#include "products.h"
#include "rows_attention.h"

std::tuple<at::Tensor, double> top_choice(const at::Tensor& logits);  // top_choice.cpp

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  // Without the GIL, as torch's own operations run: other requests' threads go on meanwhile.
  const auto without_gil = pybind11::call_guard<pybind11::gil_scoped_release>();
  module.def("run_draft_layers", &run_draft_layers, "The fused low-bit draft's layers (native_layers.py)", without_gil);
  module.def("run_draft_in_buffers", &run_draft_in_buffers, "A draft token, or a read of copies, through the fused layers in buffers (native_layers.py)",
             without_gil);
  pybind11::class_<DraftToken>(module, "DraftToken", "A draft token from its id to its logits in one call (native_layers.py)")
      .def(pybind11::init<std::vector<at::Tensor>, std::vector<int64_t>, std::vector<at::Tensor>, std::vector<at::Tensor>,
                          std::vector<c10::optional<at::Tensor>>, int64_t, int64_t, int64_t, int64_t, double, at::Tensor,
                          at::Tensor, at::Tensor, int64_t, at::Tensor, at::Tensor, c10::optional<at::Tensor>, int64_t>())
      .def("logits", &DraftToken::logits, without_gil);
  module.def("run_full_layers", &run_full_layers, "A plain model's layers as the engine runs them (native_layers.py)",
             without_gil);
  module.def("attend_cached_rows", &attend_cached_rows,
             "Attention of a forward's rows over a cache layer, each over the positions up to its own (attention_forms.py)",
             pybind11::arg("query"), pybind11::arg("keys"), pybind11::arg("values"), pybind11::arg("position"),
             pybind11::arg("scaling"), pybind11::arg("eight_lanes") = false, without_gil);
  module.def("rows_attention_available", &rows_attention_available, "Whether this CPU runs attend_cached_rows");
  module.def("bf16_pairs_mm", &bf16_pairs_mm, "bfloat16 weights times a few rows, each summed alike (narrow_linear.py)",
             without_gil);
  module.def("bf16_pairs_available", &bf16_pairs_available, "Whether this CPU runs bf16_pairs_mm");
  module.def("int8_dot_mm", &int8_dot_mm, "Low-bit weights times int8-rounded activations (lowbit.py)", without_gil);
  module.def("top_choice", &top_choice, "A row of logits' first largest and its softmax probability (sampling.py)");
  module.def("screened_logits", &screened_logits, "A draft head: a low-bit screen, its best rescored (lowbit.py)",
             without_gil);
}

// An empty at::parallel_for against a barrier inside one OpenMP region, 2 threads (probe; built with
// torch.utils.cpp_extension.load).
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <omp.h>
#include <chrono>
double fork_join(int64_t reps) {
  volatile int64_t sink = 0;
  auto t = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < reps; ++i) at::parallel_for(0, 2, 1, [&](int64_t b, int64_t e) { sink += b; });
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() / reps * 1e6;
}
double barriers(int64_t reps) {
  volatile int64_t sink = 0;
  auto t = std::chrono::steady_clock::now();
#pragma omp parallel num_threads(at::get_num_threads())
  {
    for (int64_t i = 0; i < reps; ++i) {
#pragma omp for schedule(static)
      for (int j = 0; j < 2; ++j) sink += j;
    }
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count() / reps * 1e6;
}
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("fork_join", &fork_join); m.def("barriers", &barriers); }

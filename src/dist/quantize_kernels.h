// The int8 codec's per-block kernels, behind quantize.h: a portable one and
// an AVX2 one chosen at run time (the build targets baseline x86-64, so AVX2
// code is compiled per function and only called on a CPU that has it).
//
// Every kernel produces the same bytes and the same decoded values as the
// portable one for every input: the ring's bit-identical averages and
// checkpoints depend on it, and tests/test_quantize_kernels.cpp checks it
// against a frozen copy of the original scalar code over random and
// adversarial blocks. Stateless; any thread may call them.
#pragma once
#include <cstddef>
#include <cstdint>

namespace intellect::int8_kernels {

// True when this CPU runs the AVX2 kernels (checked once).
bool avx2_available();

// int8_encode_block's contract: the table, then the codes; throws Error naming
// the first NaN/inf.
void encode_block_portable(const float* x, size_t n, uint8_t* out);
// Call only when avx2_available().
void encode_block_avx2(const float* x, size_t n, uint8_t* out);

}  // namespace intellect::int8_kernels

// libFuzzer target: a joiner's parse of the snapshot its donor sent
// (decode_join_state, format 2: four arrays, then the header, its length and
// the tag at the end). The header and its length come from the donor, so any
// byte string must parse or raise intellect::Error. Two modes, by the first
// byte:
//  - raw: the rest is the blob, parsed for a model of 0-255 values;
//  - honest: a state of up to 64 values encoded from the input, then one
//    byte of it (an array, the header, the length or the tag) replaced; an
//    untouched state must parse to its own values.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "fuzz_input.h"
#include "train/join_state.h"
#include "util/error.h"

namespace {

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

void honest(FuzzInput& in) {
  using namespace intellect;
  const size_t n = in.byte() % 65;
  JoinState s;
  s.outer_step = in.byte();
  s.step = static_cast<int64_t>(in.byte()) * 1000;
  s.adam_step = in.byte();
  for (std::vector<float>* a : {&s.outer, &s.momentum, &s.exp_avg, &s.exp_avg_sq})
    for (size_t i = 0; i < n; ++i) a->push_back(static_cast<float>(static_cast<int8_t>(in.byte())) / 7.0f);
  ByteBuffer blob = encode_join_state(s);
  const uint8_t where = in.byte(), value = in.byte();
  const bool alter = (where & 1) != 0;
  if (alter && !blob.empty()) blob[(static_cast<size_t>(where) * 131 + in.byte()) % blob.size()] = value;
  try {
    const JoinState back = decode_join_state(std::span<const uint8_t>(blob.data(), blob.size()), n, 1);
    if (!alter && (back.outer_step != s.outer_step || back.step != s.step || back.adam_step != s.adam_step ||
                   !same_bits(back.outer, s.outer) || !same_bits(back.momentum, s.momentum) ||
                   !same_bits(back.exp_avg, s.exp_avg) || !same_bits(back.exp_avg_sq, s.exp_avg_sq)))
      std::abort();  // an honest state must come back as it was
    if (back.outer.size() != n || back.exp_avg_sq.size() != n) std::abort();
  } catch (const intellect::Error&) {
    if (!alter) std::abort();  // an honest state must parse
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  FuzzInput in{data, size};
  if (in.byte() & 1) {
    honest(in);
    return 0;
  }
  const size_t n = in.byte();
  try {
    const intellect::JoinState s = intellect::decode_join_state(std::span<const uint8_t>(in.p, in.n), n, 1);
    if (s.outer.size() != n || s.momentum.size() != n || s.exp_avg.size() != n || s.exp_avg_sq.size() != n)
      std::abort();
  } catch (const intellect::Error&) {
  }
  return 0;
}

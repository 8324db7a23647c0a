// libFuzzer target: sparse all-gather messages (header + top-k payload) as
// they come off a link (issue 18), signed or not (sparse_evidence.h: the
// author's and the sender's signature checks never throw, whatever the
// bytes; version 3 carries both). Any byte string must
// parse or raise intellect::Error; a payload that passes sparse_validate is decoded into a
// buffer of exactly the announced count, so an index past it would be caught
// by ASan.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "dist/sparse.h"
#include "dist/sparse_allgather.h"
#include "dist/sparse_evidence.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const uint8_t> msg(data, size);
  try {
    const intellect::SparseHeader h = intellect::parse_sparse_header(msg, "fuzz");
    if (intellect::encode_sparse_header(h).size() != intellect::kSparseHeaderBytes) std::abort();
    static const intellect::PublicKey key = intellect::NodeKey::generate().public_key();
    if (h.is_signed && intellect::sparse_message_signed_by(msg, key)) std::abort();  // nobody holds that key's secret
    if (h.is_signed && intellect::sparse_message_sent_by(msg, key, intellect::sparse_payload_digest(msg))) std::abort();
    const uint8_t* payload = data + intellect::kSparseHeaderBytes;
    intellect::sparse_validate(payload, h.count, h.block, h.k, "fuzz");
    std::vector<float> out(h.count, 0.0f);
    intellect::sparse_decode_add(payload, h.count, h.block, h.k, out.data());
    for (float v : out)
      if (!std::isfinite(v)) std::abort();
    // The same payload as one contribution averaged per value over its
    // contributors (diloco.sparse_aggregation "contributors"): the counting
    // path writes only inside the announced count too.
    intellect::sparse_average(payload, 1, h.count, h.block, h.k, out.data(),
                              intellect::SparseAggregation::Contributors);
    for (float v : out)
      if (!std::isfinite(v)) std::abort();
  } catch (const intellect::Error&) {
  }
  return 0;
}

// libFuzzer target: the evidence an accuser hands the coordinator
// (ring_evidence.h), judged as the coordinator judges it: ring messages
// against the norm bound, or, when the first message has a leaf message's
// magic ("IRCL", commitment.h), a commitment mismatch (the leaf message
// decoder included), or, with the sparse all-gather's magic ("ISAG"), a
// sparse accusation (sparse_evidence.h), or with a ring header of the direct
// pattern's phases (2: contributions, 3: averages), a direct accusation against any member
// (judge_direct_evidence). The input is cut into messages (a u8 count, then each
// a u16 length and its bytes). With
// the first byte's top bit set the harness signs each message with the
// accused's key first (as a sparse chunk when it has that magic), so that the checks past the signature (the header
// against the ring, the codecs' validation and sums of squares over any
// payload) are reached too; with the next bit set too, a sparse chunk is
// signed by the accused as its sender only, its author signature left
// broken (the other members' keys are another key's), so that the judgement
// of an altered chunk is reached past its signatures. Any input must give a
// verdict, never a crash.
#include <array>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <vector>

#include "dist/ring_evidence.h"
#include "dist/sparse_allgather.h"
#include "dist/sparse_evidence.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const intellect::NodeKey key = intellect::NodeKey::generate();
  static const intellect::PublicKey other = intellect::NodeKey::generate().public_key();
  if (size < 2) return 0;
  const bool sign = data[0] & 0x80, as_sender = data[0] & 0x40;
  const size_t count = data[0] & 0x3f;
  intellect::EvidenceContext ctx;
  ctx.world = 2 + data[1] % 5;
  ctx.accuser_rank = data[1] / 5 % ctx.world;
  ctx.accused_rank = (ctx.accuser_rank + 1 + data[1] / 25 % (ctx.world - 1)) % ctx.world;
  ctx.round = 11;
  ctx.norms.assign(static_cast<size_t>(ctx.world), 1e-3 * (1 + data[1] % 3));
  ctx.commitments.assign(static_cast<size_t>(ctx.world), std::array<uint8_t, 32>{});
  ctx.keys.assign(static_cast<size_t>(ctx.world), other);
  size_t at = 2;
  std::vector<std::vector<uint8_t>> messages;
  for (size_t i = 0; i < count && at + 2 <= size; ++i) {
    const size_t len = data[at] | (size_t{data[at + 1]} << 8);
    at += 2;
    const size_t take = std::min(len, size - at);
    std::vector<uint8_t> m(data + at, data + at + take);
    at += take;
    if (sign && intellect::is_sparse_message(m)) {
      m.resize(m.size() + intellect::kSparseSignedBytes);
      if (m.size() >= intellect::kSparseHeaderBytes + intellect::kSparseSignedBytes) {
        if (as_sender)
          intellect::sign_sparse_forward(m, key, intellect::sparse_payload_digest(m));
        else
          intellect::sign_sparse_message(m, key);
      }
    } else if (sign) {
      m.resize(m.size() + intellect::kRingSignatureBytes);
      intellect::sign_ring_message(m, key);
    }
    messages.push_back(std::move(m));
  }
  const intellect::EvidenceVerdict v = intellect::judge_ring_evidence(messages, key.public_key(), ctx);
  if (v.why.empty()) std::abort();
  return 0;
}

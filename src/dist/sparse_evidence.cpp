#include "dist/sparse_evidence.h"

#include <sodium.h>

#include <array>
#include <cmath>
#include <cstring>
#include <set>
#include <utility>

#include "dist/contribution_check.h"
#include "dist/sparse.h"
#include "dist/sparse_allgather.h"
#include "util/error.h"

namespace intellect {

namespace {

// What the author signs: a label of its own (no other signature a node makes
// can pass for one), the header with the step zeroed, the payload's digest.
std::array<uint8_t, 32> sparse_digest(std::span<const uint8_t> body) {
  static const char label[] = "intellect sparse contribution v1";
  std::array<uint8_t, kSparseHeaderBytes> header{};
  std::memcpy(header.data(), body.data(), kSparseHeaderBytes);
  std::memset(header.data() + kSparseStepOffset, 0, 4);
  std::array<uint8_t, 32> payload{}, d{};
  crypto_generichash(payload.data(), payload.size(), body.data() + kSparseHeaderBytes,
                     body.size() - kSparseHeaderBytes, nullptr, 0);
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, d.size());
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(label), sizeof label);
  crypto_generichash_update(&st, header.data(), header.size());
  crypto_generichash_update(&st, payload.data(), payload.size());
  crypto_generichash_final(&st, d.data(), d.size());
  return d;
}

}  // namespace

void sign_sparse_message(std::span<uint8_t> msg, const NodeKey& key) {
  INTELLECT_CHECK(msg.size() >= kSparseHeaderBytes + kSparseSignatureBytes,
                  "sign_sparse_message: a message shorter than a header and a signature");
  const size_t body = msg.size() - kSparseSignatureBytes;
  const Signature sig = key.sign(sparse_digest(msg.first(body)));
  std::copy(sig.begin(), sig.end(), msg.begin() + static_cast<std::ptrdiff_t>(body));
}

bool sparse_message_signed_by(std::span<const uint8_t> msg, const PublicKey& pk) {
  if (msg.size() < kSparseHeaderBytes + kSparseSignatureBytes) return false;
  const size_t body = msg.size() - kSparseSignatureBytes;
  Signature sig;
  std::copy(msg.begin() + static_cast<std::ptrdiff_t>(body), msg.end(), sig.begin());
  return verify_signature(pk, sparse_digest(msg.first(body)), sig);
}

EvidenceVerdict judge_sparse_evidence(const std::vector<std::vector<uint8_t>>& messages, const PublicKey& accused,
                                      const EvidenceContext& ctx) {
  auto no = [](auto&&... why) { return EvidenceVerdict{false, str(why...)}; };
  if (messages.empty()) return no("no messages");
  if (messages.size() > kMaxEvidenceMessages) return no(messages.size(), " messages, more than ", kMaxEvidenceMessages);
  if (ctx.world < 2 || ctx.accuser_rank < 0 || ctx.accuser_rank >= ctx.world || ctx.accused_rank < 0 ||
      ctx.accused_rank >= ctx.world || ctx.accused_rank == ctx.accuser_rank ||
      ctx.norms.size() != static_cast<size_t>(ctx.world))
    return no("the accuser and the accused are not two members of a ring of two or more");
  const double norm = ctx.norms[static_cast<size_t>(ctx.accused_rank)];
  if (!(norm >= 0.0) || !std::isfinite(norm)) return no("the accused announced no norm, so nothing was checked");
  if (!(ctx.sparse_slack >= 1.0) || !std::isfinite(ctx.sparse_slack)) return no("no sparse slack to judge with");
  size_t bytes = 0;
  double sum_squares = 0.0;
  std::set<std::pair<uint32_t, uint32_t>> seen;  // (lane, chunk): one message each from an honest author
  for (size_t i = 0; i < messages.size(); ++i) {
    const std::vector<uint8_t>& m = messages[i];
    const std::string what = str("evidence message ", i);
    bytes += m.size();
    if (bytes > kMaxEvidenceBytes) return no("more than ", kMaxEvidenceBytes, " bytes of messages");
    SparseHeader h;
    try {
      h = parse_sparse_header(m, what);
    } catch (const Error& e) {
      return no(e.what());
    }
    if (!h.is_signed) return no(what, " is not signed");
    if (!sparse_message_signed_by(m, accused)) return no(what, ": the signature is not the accused's");
    if (h.round != ctx.round) return no(what, " is of round ", h.round, ", not ", ctx.round);
    if (h.world != static_cast<uint32_t>(ctx.world)) return no(what, " is of a ring of ", h.world, ", not ", ctx.world);
    if (h.source != static_cast<uint32_t>(ctx.accused_rank))
      return no(what, " is rank ", h.source, "'s contribution, not the accused's (rank ", ctx.accused_rank, ")");
    // The same chunk twice (its step field differs from hop to hop, so not
    // by its bytes) would count its squares twice.
    if (!seen.insert({h.lane, h.chunk}).second)
      return no(what, " repeats lane ", h.lane, " chunk ", h.chunk, " of an earlier one");
    const uint8_t* payload = m.data() + kSparseHeaderBytes;
    try {
      sparse_validate(payload, h.count, h.block, h.k, what.c_str());
    } catch (const Error& e) {
      return no(e.what());
    }
    sparse_for_each(payload, h.count, h.block, h.k, [&](size_t, float v) { sum_squares += double(v) * double(v); });
  }
  const double b = ctx.sparse_slack * norm, got = std::sqrt(sum_squares);
  if (sum_squares <= b * b + kNormFloor)
    return no("the ", messages.size(), " chunks' norm ", got, " is within the ", b, " the accused's announced norm allows");
  return EvidenceVerdict{true, str(messages.size(), " chunks of its sparse contribution, signed by the accused, have a "
                                   "norm of ", got, ", above the ", b, " its announced norm (", norm, ") allows")};
}

}  // namespace intellect

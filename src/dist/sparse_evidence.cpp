#include "dist/sparse_evidence.h"

#include <sodium.h>

#include <algorithm>
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
SparseDigest author_digest(std::span<const uint8_t> msg, const SparseDigest& payload) {
  static const char label[] = "intellect sparse contribution v1";
  std::array<uint8_t, kSparseHeaderBytes> header{};
  std::memcpy(header.data(), msg.data(), kSparseHeaderBytes);
  std::memset(header.data() + kSparseStepOffset, 0, 4);
  SparseDigest d{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, d.size());
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(label), sizeof label);
  crypto_generichash_update(&st, header.data(), header.size());
  crypto_generichash_update(&st, payload.data(), payload.size());
  crypto_generichash_final(&st, d.data(), d.size());
  return d;
}

// What the sender of one hop signs: a label of its own, the whole header
// (the step says which hop, so who sent it), the payload's digest and the
// author's signature, as it passes them on.
SparseDigest sender_digest(std::span<const uint8_t> msg, const SparseDigest& payload) {
  static const char label[] = "intellect sparse forward v1";
  SparseDigest d{};
  crypto_generichash_state st;
  crypto_generichash_init(&st, nullptr, 0, d.size());
  crypto_generichash_update(&st, reinterpret_cast<const uint8_t*>(label), sizeof label);
  crypto_generichash_update(&st, msg.data(), kSparseHeaderBytes);
  crypto_generichash_update(&st, payload.data(), payload.size());
  crypto_generichash_update(&st, msg.data() + msg.size() - kSparseSignedBytes, kSparseSignatureBytes);
  crypto_generichash_final(&st, d.data(), d.size());
  return d;
}

bool long_enough(std::span<const uint8_t> msg) { return msg.size() >= kSparseHeaderBytes + kSparseSignedBytes; }

Signature signature_at(std::span<const uint8_t> msg, size_t from_end) {
  Signature sig;
  std::copy_n(msg.end() - static_cast<std::ptrdiff_t>(from_end), kSparseSignatureBytes, sig.begin());
  return sig;
}

void put_signature(std::span<uint8_t> msg, size_t from_end, const Signature& sig) {
  std::copy(sig.begin(), sig.end(), msg.end() - static_cast<std::ptrdiff_t>(from_end));
}

}  // namespace

SparseDigest sparse_payload_digest(std::span<const uint8_t> msg) {
  INTELLECT_CHECK(long_enough(msg), "sparse_payload_digest: a message shorter than a header and its signatures");
  SparseDigest d{};
  crypto_generichash(d.data(), d.size(), msg.data() + kSparseHeaderBytes,
                     msg.size() - kSparseHeaderBytes - kSparseSignedBytes, nullptr, 0);
  return d;
}

void sign_sparse_message(std::span<uint8_t> msg, const NodeKey& key) {
  INTELLECT_CHECK(long_enough(msg), "sign_sparse_message: a message shorter than a header and its signatures");
  const SparseDigest payload = sparse_payload_digest(msg);
  put_signature(msg, kSparseSignedBytes, key.sign(author_digest(msg, payload)));
  sign_sparse_forward(msg, key, payload);
}

void sign_sparse_forward(std::span<uint8_t> msg, const NodeKey& key, const SparseDigest& payload) {
  INTELLECT_CHECK(long_enough(msg), "sign_sparse_forward: a message shorter than a header and its signatures");
  put_signature(msg, kSparseSignatureBytes, key.sign(sender_digest(msg, payload)));
}

bool sparse_message_signed_by(std::span<const uint8_t> msg, const PublicKey& pk, const SparseDigest& payload) {
  if (!long_enough(msg)) return false;
  return verify_signature(pk, author_digest(msg, payload), signature_at(msg, kSparseSignedBytes));
}

bool sparse_message_signed_by(std::span<const uint8_t> msg, const PublicKey& pk) {
  return long_enough(msg) && sparse_message_signed_by(msg, pk, sparse_payload_digest(msg));
}

bool sparse_message_sent_by(std::span<const uint8_t> msg, const PublicKey& pk, const SparseDigest& payload) {
  if (!long_enough(msg)) return false;
  return verify_signature(pk, sender_digest(msg, payload), signature_at(msg, kSparseSignatureBytes));
}

namespace {

// The second kind (sparse_evidence.h): one chunk its sender signed on
// although its author's signature does not hold. `m` parsed as `h`, signed.
EvidenceVerdict judge_altered_chunk(const std::vector<uint8_t>& m, const SparseHeader& h, const PublicKey& accused,
                                    const PublicKey& author, const EvidenceContext& ctx) {
  auto no = [](auto&&... why) { return EvidenceVerdict{false, str(why...)}; };
  const uint32_t world = static_cast<uint32_t>(ctx.world);
  if (h.round != ctx.round) return no("the chunk is of round ", h.round, ", not ", ctx.round);
  if (h.world != world) return no("the chunk is of a ring of ", h.world, ", not ", ctx.world);
  if (h.source >= world || h.step + 1 >= world) return no("the chunk's author or step is outside the ring");
  const uint32_t sender = (h.source + h.step) % world;
  if (sender != static_cast<uint32_t>(ctx.accused_rank) || (sender + 1) % world != static_cast<uint32_t>(ctx.accuser_rank))
    return no("the chunk (rank ", h.source, "'s, step ", h.step, ") went from rank ", sender, " to rank ",
              (sender + 1) % world, ", not from the accused (rank ", ctx.accused_rank, ") to the accuser (rank ",
              ctx.accuser_rank, ")");
  const SparseDigest payload = sparse_payload_digest(m);
  if (!sparse_message_sent_by(m, accused, payload))
    return no("the sender's signature is not the accused's either: nothing shows who altered it");
  return EvidenceVerdict{true,
                         str("the accused sent lane ", h.lane, " chunk ", h.chunk, " of rank ", h.source,
                             "'s contribution (step ", h.step, ") under its own signature as sender, but that "
                             "rank's signature (", fingerprint(author), ") does not hold for it: the accused altered "
                             "it (an honest sender checks the author's signature before it signs on)"),
                         true};
}

}  // namespace

EvidenceVerdict judge_sparse_evidence(const std::vector<std::vector<uint8_t>>& messages, const PublicKey& accused,
                                      const EvidenceContext& ctx) {
  auto no = [](auto&&... why) { return EvidenceVerdict{false, str(why...)}; };
  if (messages.empty()) return no("no messages");
  if (messages.size() > kMaxEvidenceMessages) return no(messages.size(), " messages, more than ", kMaxEvidenceMessages);
  if (ctx.world < 2 || ctx.accuser_rank < 0 || ctx.accuser_rank >= ctx.world || ctx.accused_rank < 0 ||
      ctx.accused_rank >= ctx.world || ctx.accused_rank == ctx.accuser_rank)
    return no("the accuser and the accused are not two members of a ring of two or more");
  // One chunk whose author's signature does not hold: the altered kind.
  if (messages.size() == 1) {
    const std::vector<uint8_t>& m = messages[0];
    if (m.size() > kMaxEvidenceBytes) return no("more than ", kMaxEvidenceBytes, " bytes of messages");
    SparseHeader h;
    try {
      h = parse_sparse_header(m, "evidence message 0");
    } catch (const Error& e) {
      return no(e.what());
    }
    if (!h.is_signed) return no("evidence message 0 is not signed");
    const bool own = h.source == static_cast<uint32_t>(ctx.accused_rank);
    const bool key_known = own || (h.source < ctx.keys.size() && ctx.keys[h.source] != PublicKey{});
    const PublicKey& author = own ? accused : (key_known ? ctx.keys[h.source] : accused);
    if (key_known && !sparse_message_signed_by(m, author)) {
      EvidenceVerdict v = judge_altered_chunk(m, h, accused, author, ctx);
      if (!v.holds)
        v.why = str(own ? std::string("the signature is not the accused's as the chunk's author")
                        : str("the signature is not rank ", h.source, "'s, the chunk's author"),
                    ", and it does not show an altered chunk either: ", v.why);
      return v;
    }
  }
  if (ctx.norms.size() != static_cast<size_t>(ctx.world)) return no("no announced norms for that ring");
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

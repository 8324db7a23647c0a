#include "dist/handshake.h"

#include <sodium.h>

#include <cstring>

#include "util/error.h"

namespace intellect {

namespace {

constexpr size_t kChallengeBytes = 2 + kEphemeralBytes;  // mode, suites, eA
constexpr size_t kResponseHead = 2 + kEphemeralBytes;    // mode, suite, eI
constexpr size_t kMacBytes = crypto_auth_hmacsha256_BYTES;
constexpr size_t kKeyedProofBytes = kPublicKeyBytes + kSignatureBytes;
constexpr char kTranscriptLabel[] = "intellect mesh handshake v2";
constexpr char kKdfContext[crypto_kdf_CONTEXTBYTES + 1] = "intlmesh";
enum SubKey : uint64_t { hs_initiator = 1, hs_acceptor = 2, initiator_to_acceptor = 3, acceptor_to_initiator = 4 };

uint8_t suite_bit(CipherSuite s) { return static_cast<uint8_t>(1u << static_cast<unsigned>(s)); }

uint8_t suites_of_this_machine() {
  uint8_t m = suite_bit(CipherSuite::chacha20_poly1305);
  if (aes256gcm_available()) m |= suite_bit(CipherSuite::aes256_gcm);
  return m;
}

// Role labels make an initiator's proof useless as an acceptor's.
const char* proof_label(AuthRole r) {
  return r == AuthRole::initiator ? "intellect mesh v2: initiator proves" : "intellect mesh v2: acceptor proves";
}

std::array<uint8_t, 32> blake2b(std::initializer_list<std::pair<const uint8_t*, size_t>> parts,
                                const uint8_t* key = nullptr, size_t key_len = 0) {
  crypto_generichash_state st;
  crypto_generichash_init(&st, key, key_len, 32);
  for (auto [p, n] : parts) crypto_generichash_update(&st, p, n);
  std::array<uint8_t, 32> out;
  crypto_generichash_final(&st, out.data(), out.size());
  sodium_memzero(&st, sizeof st);
  return out;
}

const uint8_t* bytes_of(const char* s) { return reinterpret_cast<const uint8_t*>(s); }

// What a side signs (node keys) or MACs (shared secret): its role's label,
// the transcript, and for the acceptor the initiator's identity too.
std::vector<uint8_t> proof_message(AuthRole prover, const std::array<uint8_t, 32>& h2,
                                   const std::optional<PublicKey>& initiator_key) {
  const char* label = proof_label(prover);
  std::vector<uint8_t> m(bytes_of(label), bytes_of(label) + std::strlen(label) + 1);
  m.insert(m.end(), h2.begin(), h2.end());
  if (prover == AuthRole::acceptor && initiator_key) m.insert(m.end(), initiator_key->begin(), initiator_key->end());
  return m;
}

std::array<uint8_t, kMacBytes> secret_mac(const RunSecret& secret, const std::vector<uint8_t>& message) {
  const auto& key = secret.bytes();
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key.data(), key.size());
  crypto_auth_hmacsha256_update(&st, message.data(), message.size());
  std::array<uint8_t, kMacBytes> mac;
  crypto_auth_hmacsha256_final(&st, mac.data());
  sodium_memzero(&st, sizeof st);
  return mac;
}

// The handshake's own AEAD: one message per key, so nonce 0 is unique.
std::vector<uint8_t> seal_once(const AeadKey& key, const std::array<uint8_t, 32>& ad, std::vector<uint8_t> m) {
  const uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES] = {};
  std::vector<uint8_t> c(m.size() + crypto_aead_chacha20poly1305_ietf_ABYTES);
  unsigned long long clen = 0;
  crypto_aead_chacha20poly1305_ietf_encrypt(c.data(), &clen, m.data(), m.size(), ad.data(), ad.size(), nullptr, nonce,
                                            key.data());
  sodium_memzero(m.data(), m.size());
  c.resize(clen);
  return c;
}

bool open_once(const AeadKey& key, const std::array<uint8_t, 32>& ad, const uint8_t* c, size_t n,
               std::vector<uint8_t>* m) {
  if (n < crypto_aead_chacha20poly1305_ietf_ABYTES) return false;
  const uint8_t nonce[crypto_aead_chacha20poly1305_ietf_NPUBBYTES] = {};
  m->resize(n - crypto_aead_chacha20poly1305_ietf_ABYTES);
  unsigned long long mlen = 0;
  return crypto_aead_chacha20poly1305_ietf_decrypt(m->data(), &mlen, nullptr, c, n, ad.data(), ad.size(), nonce,
                                                   key.data()) == 0;
}

}  // namespace

const char* auth_role_name(AuthRole r) { return r == AuthRole::initiator ? "initiator" : "acceptor"; }

SessionKeys::~SessionKeys() {
  sodium_memzero(send.data(), send.size());
  sodium_memzero(recv.data(), recv.size());
}

Handshake::Handshake(AuthRole role, PeerCredentials credentials, OwnEphemeralCheck own)
    : role_(role), cred_(std::move(credentials)), own_check_(std::move(own)), offered_(suites_of_this_machine()) {
  if (sodium_init() < 0) fail("libsodium failed to initialise; the mesh cannot authenticate peers");
  INTELLECT_CHECK(!cred_.empty(), "Handshake needs credentials (a run secret or a node key)");
}

Handshake::~Handshake() {
  sodium_memzero(e_sk_.data(), e_sk_.size());
  sodium_memzero(hs_initiator_.data(), hs_initiator_.size());
  sodium_memzero(hs_acceptor_.data(), hs_acceptor_.size());
}

std::optional<Frame> Handshake::fail_with(std::string why) {
  state_ = State::failed;
  failure_ = std::move(why);
  return std::nullopt;
}

std::optional<Frame> Handshake::start() {
  INTELLECT_CHECK(!started_, "Handshake::start called twice");
  started_ = true;
  crypto_box_keypair(e_pk_.data(), e_sk_.data());  // X25519
  if (role_ == AuthRole::initiator) return std::nullopt;  // the acceptor speaks first
  Frame f{FrameType::auth_challenge, {}};
  f.payload.push_back(static_cast<uint8_t>(cred_.mode));
  f.payload.push_back(static_cast<uint8_t>(offered_ | (unsealed_ ? kUnsealedFramesFlag : 0)));
  f.payload.insert(f.payload.end(), e_pk_.begin(), e_pk_.end());
  const uint16_t v = kProtocolVersion;
  const uint8_t version[2] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)};
  h1_ = blake2b({{bytes_of(kTranscriptLabel), sizeof kTranscriptLabel}, {version, 2}, {f.payload.data(), f.payload.size()}});
  return f;
}

std::optional<Frame> Handshake::on_frame(const Frame& frame) {
  INTELLECT_CHECK(started_, "Handshake::on_frame called before start()");
  if (state_ != State::waiting)
    return fail_with(str("unexpected ", frame_type_name(frame.type), " frame after the handshake ",
                         state_ == State::done ? "finished" : "failed"));
  const int n = received_++;
  if (role_ == AuthRole::acceptor) {
    if (frame.type != FrameType::auth_response)
      return fail_with(str("expected the initiator's auth_response, got ", frame_type_name(frame.type)));
    return on_response(frame);
  }
  if (n == 0) {
    if (frame.type != FrameType::auth_challenge)
      return fail_with(str("expected the acceptor's auth_challenge, got ", frame_type_name(frame.type)));
    return on_challenge(frame);
  }
  if (frame.type != FrameType::auth_confirm)
    return fail_with(str("expected the acceptor's auth_confirm, got ", frame_type_name(frame.type)));
  return on_confirm(frame);
}

void Handshake::set_unsealed_frames_for_benchmarks(bool on) {
  INTELLECT_CHECK(!started_, "Handshake::set_unsealed_frames_for_benchmarks after start()");
  unsealed_ = on;
  session_.unsealed_for_benchmarks = on;
}

// A peer whose unsealed_frames_for_benchmarks differs from ours: refused
// both ways, whichever side is the benchmark.
static std::string unsealed_mismatch(bool ours) {
  return ours ? "this node sends unsealed frames (unsealed_frames_for_benchmarks: bench_allreduce --plaintext, a "
                "benchmark-only mode) but the peer seals every frame: refused; both ends of a benchmark must be "
                "started by the same bench_allreduce --plaintext"
              : "the peer declares unsealed frames (unsealed_frames_for_benchmarks, the benchmark-only mode of "
                "bench_allreduce --plaintext: frames neither encrypted nor authenticated) but this node seals every "
                "frame: refused; no node of a run ever talks plaintext";
}

static std::string mode_mismatch(AuthMode ours, uint8_t theirs) {
  if (theirs == static_cast<uint8_t>(AuthMode::shared_secret) && ours == AuthMode::node_keys)
    return "the peer offers only the shared-secret mode but this node uses node keys: refused (a downgrade "
           "attempt, or a node started with mesh.secret_file instead of mesh.node_key_file)";
  if (theirs == static_cast<uint8_t>(AuthMode::node_keys) && ours == AuthMode::shared_secret)
    return "the peer uses node keys but this node uses the shared-secret mode: configure mesh.node_key_file "
           "(and mesh.allowlist_file) on this node as on the rest of the run";
  return str("the peer asks for an unknown authentication mode ", static_cast<unsigned>(theirs));
}

// Initiator: the acceptor's challenge. Answers with our ephemeral and our
// identity proof, sealed.
std::optional<Frame> Handshake::on_challenge(const Frame& f) {
  const auto& p = f.payload;
  if (p.size() != kChallengeBytes)
    return fail_with(str("auth_challenge of ", p.size(), " bytes, expected ", kChallengeBytes));
  if (p[0] != static_cast<uint8_t>(cred_.mode)) return fail_with(mode_mismatch(cred_.mode, p[0]));
  if (((p[1] & kUnsealedFramesFlag) != 0) != unsealed_) return fail_with(unsealed_mismatch(unsealed_));
  const uint8_t common = p[1] & offered_;
  if (!(common & suite_bit(CipherSuite::chacha20_poly1305)) && !(common & suite_bit(CipherSuite::aes256_gcm)))
    return fail_with(str("no cipher suite in common (the peer offers mask ", static_cast<unsigned>(p[1]), ")"));
  suite_ = (common & suite_bit(CipherSuite::aes256_gcm)) ? CipherSuite::aes256_gcm : CipherSuite::chacha20_poly1305;
  EphemeralKey e_a;
  std::memcpy(e_a.data(), p.data() + 2, kEphemeralBytes);
  if (sodium_memcmp(e_a.data(), e_pk_.data(), kEphemeralBytes) == 0 || (own_check_ && own_check_(e_a)))
    return fail_with("the acceptor's challenge carries an ephemeral key this process sent itself: someone is "
                     "relaying our own handshake back to us");
  const uint16_t v = kProtocolVersion;
  const uint8_t version[2] = {static_cast<uint8_t>(v), static_cast<uint8_t>(v >> 8)};
  h1_ = blake2b({{bytes_of(kTranscriptLabel), sizeof kTranscriptLabel}, {version, 2}, {p.data(), p.size()}});
  Frame out{FrameType::auth_response, {}};
  out.payload.push_back(static_cast<uint8_t>(cred_.mode));
  out.payload.push_back(static_cast<uint8_t>(static_cast<uint8_t>(suite_) | (unsealed_ ? kUnsealedFramesFlag : 0)));
  out.payload.insert(out.payload.end(), e_pk_.begin(), e_pk_.end());
  h2_ = blake2b({{h1_.data(), h1_.size()}, {out.payload.data(), out.payload.size()}});
  std::string why;
  if (!derive_keys(e_a, &why)) return fail_with(why);
  if (cred_.mode == AuthMode::node_keys) initiator_key_ = cred_.key.public_key();
  std::vector<uint8_t> sealed = seal_once(hs_initiator_, h2_, identity_proof(AuthRole::initiator));
  out.payload.insert(out.payload.end(), sealed.begin(), sealed.end());
  return out;
}

// Acceptor: the initiator's response. Verifies it, then confirms with our own
// proof; the handshake is done on this side.
std::optional<Frame> Handshake::on_response(const Frame& f) {
  const auto& p = f.payload;
  if (p.size() < kResponseHead) return fail_with(str("auth_response of ", p.size(), " bytes is too short"));
  if (p[0] != static_cast<uint8_t>(cred_.mode)) return fail_with(mode_mismatch(cred_.mode, p[0]));
  if (((p[1] & kUnsealedFramesFlag) != 0) != unsealed_) return fail_with(unsealed_mismatch(unsealed_));
  const uint8_t chosen = static_cast<uint8_t>(p[1] & ~kUnsealedFramesFlag);
  if (chosen != static_cast<uint8_t>(CipherSuite::chacha20_poly1305) &&
      chosen != static_cast<uint8_t>(CipherSuite::aes256_gcm))
    return fail_with(str("the initiator chose an unknown cipher suite ", static_cast<unsigned>(chosen)));
  suite_ = static_cast<CipherSuite>(chosen);
  if (!(offered_ & suite_bit(suite_)))
    return fail_with(str("the initiator chose ", cipher_suite_name(suite_), ", which this node did not offer"));
  EphemeralKey e_i;
  std::memcpy(e_i.data(), p.data() + 2, kEphemeralBytes);
  if (sodium_memcmp(e_i.data(), e_pk_.data(), kEphemeralBytes) == 0)
    return fail_with("the initiator echoed our own ephemeral key back (a reflection attempt)");
  h2_ = blake2b({{h1_.data(), h1_.size()}, {p.data(), kResponseHead}});
  std::string why;
  if (!derive_keys(e_i, &why)) return fail_with(why);
  why = check_identity_proof(AuthRole::initiator, p.data() + kResponseHead, p.size() - kResponseHead);
  if (!why.empty()) return fail_with(why);
  initiator_key_ = peer_key_;
  std::vector<uint8_t> sealed = seal_once(hs_acceptor_, h2_, identity_proof(AuthRole::acceptor));
  state_ = State::done;
  return Frame{FrameType::auth_confirm, std::move(sealed)};
}

// Initiator: the acceptor's confirmation.
std::optional<Frame> Handshake::on_confirm(const Frame& f) {
  std::string why = check_identity_proof(AuthRole::acceptor, f.payload.data(), f.payload.size());
  if (!why.empty()) return fail_with(why);
  state_ = State::done;
  return std::nullopt;
}

bool Handshake::derive_keys(const EphemeralKey& peer_e, std::string* why) {
  std::array<uint8_t, 32> dh;
  if (crypto_scalarmult(dh.data(), e_sk_.data(), peer_e.data()) != 0) {
    *why = "the peer's ephemeral key is a low-order point (a malformed or hostile handshake)";
    return false;
  }
  // The run secret, hashed, keys the derivation in the shared-secret mode, so
  // only holders of the secret can even open the handshake's sealed parts.
  std::array<uint8_t, 32> psk{};
  if (cred_.mode == AuthMode::shared_secret) {
    const auto& s = cred_.secret.bytes();
    static const char label[] = "intellect mesh v2: run secret";
    psk = blake2b({{bytes_of(label), sizeof label}, {s.data(), s.size()}});
  }
  std::array<uint8_t, crypto_kdf_KEYBYTES> master =
      blake2b({{dh.data(), dh.size()}, {h2_.data(), h2_.size()}}, psk.data(), psk.size());
  crypto_kdf_derive_from_key(hs_initiator_.data(), hs_initiator_.size(), hs_initiator, kKdfContext, master.data());
  crypto_kdf_derive_from_key(hs_acceptor_.data(), hs_acceptor_.size(), hs_acceptor, kKdfContext, master.data());
  AeadKey i2a, a2i;
  crypto_kdf_derive_from_key(i2a.data(), i2a.size(), initiator_to_acceptor, kKdfContext, master.data());
  crypto_kdf_derive_from_key(a2i.data(), a2i.size(), acceptor_to_initiator, kKdfContext, master.data());
  session_.suite = suite_;
  session_.send = role_ == AuthRole::initiator ? i2a : a2i;
  session_.recv = role_ == AuthRole::initiator ? a2i : i2a;
  sodium_memzero(dh.data(), dh.size());
  sodium_memzero(psk.data(), psk.size());
  sodium_memzero(master.data(), master.size());
  sodium_memzero(i2a.data(), i2a.size());
  sodium_memzero(a2i.data(), a2i.size());
  return true;
}

std::vector<uint8_t> Handshake::identity_proof(AuthRole prover) const {
  const std::vector<uint8_t> m = proof_message(prover, h2_, initiator_key_);
  std::vector<uint8_t> out;
  if (cred_.mode == AuthMode::node_keys) {
    const PublicKey& pk = cred_.key.public_key();
    const Signature sig = cred_.key.sign(m);
    out.insert(out.end(), pk.begin(), pk.end());
    out.insert(out.end(), sig.begin(), sig.end());
  } else {
    const auto mac = secret_mac(cred_.secret, m);
    out.assign(mac.begin(), mac.end());
  }
  if (proof_transform_) out = proof_transform_(std::move(out));
  return out;
}

// Opens the peer's sealed proof and checks it; empty when it holds.
std::string Handshake::check_identity_proof(AuthRole prover, const uint8_t* p, size_t n) {
  const char* who = auth_role_name(prover);
  const AeadKey& key = prover == AuthRole::initiator ? hs_initiator_ : hs_acceptor_;
  std::vector<uint8_t> inner;
  if (!open_once(key, h2_, p, n, &inner))
    return cred_.mode == AuthMode::shared_secret
               ? str("the ", who, "'s proof does not open: it does not hold this run's secret (check that every "
                     "node uses the same secret file), or the handshake was altered on the way")
               : str("the ", who, "'s proof does not open: the handshake was altered on the way");
  const std::vector<uint8_t> m = proof_message(prover, h2_, initiator_key_);
  if (cred_.mode == AuthMode::shared_secret) {
    const auto want = secret_mac(cred_.secret, m);
    if (inner.size() != kMacBytes || sodium_memcmp(inner.data(), want.data(), kMacBytes) != 0)
      return str("the ", who, "'s proof does not verify: it does not hold this run's secret");
    return "";
  }
  if (inner.size() != kKeyedProofBytes)
    return str("the ", who, "'s identity proof is ", inner.size(), " bytes, expected ", kKeyedProofBytes);
  PublicKey pk;
  Signature sig;
  std::memcpy(pk.data(), inner.data(), kPublicKeyBytes);
  std::memcpy(sig.data(), inner.data() + kPublicKeyBytes, kSignatureBytes);
  if (!verify_signature(pk, m, sig))
    return str("the ", who, "'s signature by ", fingerprint(pk), " does not verify");
  if (pk == cred_.key.public_key())
    return str("the ", who, " presented this node's own key ", fingerprint(pk),
               ": a reflected handshake, or a key file copied to two nodes (each node needs its own)");
  if (std::string refused = cred_.admit ? cred_.admit(pk) : "not admitted"; !refused.empty())
    return str("the ", who, " ", fingerprint(pk), " is not admitted: ", refused);
  peer_key_ = pk;
  return "";
}

}  // namespace intellect

// libFuzzer target: the key exchange between two honest Handshakes (either
// mode), with the fuzzer on the path between them. fuzz_handshake feeds one
// side arbitrary bytes, which can never get past a sealed identity proof;
// this target reaches everything after it: the opened proof's checks (size,
// signature, own key, admission), the confirm, and the session keys.
//
// Byte 0: the mode (node keys or shared secret), whether the acceptor's
// allowlist admits the initiator, and each side's offered suites. Then, for
// each of the initiator's and the acceptor's proof, one change before it is
// sealed (none, flip a bit, cut it, or fuzzer bytes in its place: any
// outsider can seal what it likes in the node-keys mode, where the
// handshake keys need no secret), and for each of the three messages one
// change on the wire (none, flip a bit, cut, extend, replace the payload,
// or change the frame type). Every message goes through FrameDecoder
// (handshake phase) as the transport feeds it.
//
// The contract:
// - nothing changed and the initiator admitted: both sides done, with the
//   same suite, crossed frame keys that open each other's sealed frames, and
//   (node keys) each other's public key;
// - the initiator done only if every message and the acceptor's proof
//   arrived as sent; the acceptor done only if the challenge, the response
//   and the initiator's proof did and it admitted the initiator.
// libsodium's randomness is a fixed stream, restarted for every input, so
// each input replays exactly.
#include <sodium.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <vector>

#include "dist/auth.h"
#include "dist/frame.h"
#include "dist/frame_cipher.h"
#include "dist/handshake.h"
#include "dist/identity.h"
#include "dist/sealed_frame.h"
#include "fuzz_input.h"

using namespace intellect;

namespace {

uint64_t g_rng = 0;
uint64_t next_random() {  // splitmix64
  uint64_t z = (g_rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
const char* rng_name() { return "fuzz-fixed"; }
uint32_t rng_random() { return static_cast<uint32_t>(next_random()); }
void rng_stir() {}
void rng_buf(void* buf, size_t n) {
  auto* p = static_cast<uint8_t*>(buf);
  for (size_t i = 0; i < n; ++i) p[i] = static_cast<uint8_t>(next_random());
}
randombytes_implementation g_impl = {rng_name, rng_random, rng_stir, nullptr, rng_buf, nullptr};

using Reader = FuzzInput;

// The proof a side seals, changed as the fuzzer says; *changed tells whether
// it differs from the honest one.
Handshake::ProofTransform proof_change(Reader& in, bool* changed) {
  const uint8_t op = in.byte() % 4;
  const uint8_t pos = in.byte(), bit = in.byte() % 8, len = in.byte();
  std::vector<uint8_t> junk = op == 3 ? in.bytes(len % 128) : std::vector<uint8_t>();
  *changed = false;
  return [=](std::vector<uint8_t> proof) {
    std::vector<uint8_t> out = proof;
    if (op == 1 && !out.empty()) out[pos % out.size()] ^= static_cast<uint8_t>(1u << bit);
    if (op == 2) out.resize(std::min<size_t>(out.size(), pos % (out.size() + 1)));
    if (op == 3) out = junk;
    *changed = out != proof;
    return out;
  };
}

// One message on the wire, changed as the fuzzer says. Returns whether the
// frame differs from the one sent.
bool wire_change(Reader& in, Frame& f) {
  static const FrameType kTypes[] = {FrameType::auth_challenge, FrameType::auth_response, FrameType::auth_confirm,
                                     FrameType::control, FrameType::data};
  const Frame sent = f;
  const uint8_t op = in.byte() % 6;
  const uint8_t pos = in.byte(), arg = in.byte();
  auto& p = f.payload;
  switch (op) {
    case 1:
      if (!p.empty()) p[pos % p.size()] ^= static_cast<uint8_t>(1u << (arg % 8));
      break;
    case 2:
      p.resize(std::min<size_t>(p.size(), pos % (p.size() + 1)));
      break;
    case 3: {
      const auto extra = in.bytes(1 + arg % 64);
      p.insert(p.end(), extra.begin(), extra.end());
      break;
    }
    case 4:
      p = in.bytes(arg);
      break;
    case 5:
      f.type = kTypes[arg % 5];
      break;
    default:
      break;
  }
  return f.type != sent.type || f.payload != sent.payload;
}

// The receiver's side of one message: through its decoder into its handshake.
std::optional<Frame> deliver(FrameDecoder& dec, Handshake& hs, const Frame& f) {
  const std::vector<uint8_t> wire = encode_frame(f);
  size_t at = 0;
  std::optional<Frame> reply;
  while (at < wire.size() && !dec.failed() && !hs.failed()) {
    const size_t k = dec.feed(wire.data() + at, wire.size() - at);
    at += k;
    if (dec.ready()) {
      reply = hs.on_frame(dec.take());
      if (reply) encode_frame(*reply);
    } else if (k == 0) {
      std::abort();  // neither progress, nor a frame, nor an error
    }
  }
  return reply;
}

// Both sides' frame keys, crossed: what one seals, the other opens.
void check_session(const Handshake& a, const Handshake& b) {
  const SessionKeys &sa = a.session(), &sb = b.session();
  if (sa.suite != sb.suite || sa.unsealed_for_benchmarks || sb.unsealed_for_benchmarks) std::abort();
  if (sa.send != sb.recv || sa.recv != sb.send || sa.send == sa.recv) std::abort();
  if (sa.suite == CipherSuite::aes256_gcm && !aes256gcm_available()) return;
  const FrameCipher tx(sa.suite, sa.send), rx(sb.suite, sb.recv);
  Frame f{FrameType::data, {1, 2, 3, 4, 5}};
  FrameDecoder dec(FrameDecoder::Phase::established);
  const auto bytes = sealed_frame_bytes(tx, 0, f);
  if (dec.feed(bytes.data(), bytes.size()) != bytes.size() || !dec.ready()) std::abort();
  Frame got = dec.take();
  if (!open_frame(rx, 0, got).empty() || got.payload != f.payload) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  randombytes_set_implementation(&g_impl);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  g_rng = 0x1234;
  static const RunSecret secret(std::vector<uint8_t>(32, 0x42));
  static const NodeKey acceptor_key = NodeKey::generate(), initiator_key = NodeKey::generate();
  const uint8_t mode = data[0];
  const bool keyed = mode & 1, admitted = !(mode & 2) || !keyed;
  // Each side offers ChaCha20-Poly1305, AES-256-GCM or both (a suite bit is 1 << CipherSuite).
  const uint8_t chacha = 1u << static_cast<unsigned>(CipherSuite::chacha20_poly1305),
                aes = 1u << static_cast<unsigned>(CipherSuite::aes256_gcm);
  const uint8_t masks[] = {chacha, aes, static_cast<uint8_t>(chacha | aes), static_cast<uint8_t>(chacha | aes)};
  const uint8_t acceptor_mask = masks[(mode >> 2) & 3], initiator_mask = masks[(mode >> 4) & 3];
  const PublicKey initiator_pk = initiator_key.public_key();
  PeerCredentials acred = keyed ? PeerCredentials::keyed(acceptor_key,
                                                         [=](const PublicKey& pk) {
                                                           return admitted && pk == initiator_pk
                                                                      ? std::string()
                                                                      : std::string("not on the allowlist");
                                                         })
                                : PeerCredentials(secret);
  PeerCredentials icred = keyed ? PeerCredentials::keyed(initiator_key, [](const PublicKey&) { return std::string(); })
                                : PeerCredentials(secret);
  Handshake acceptor(AuthRole::acceptor, acred), initiator(AuthRole::initiator, icred);
  acceptor.set_offered_suites_for_testing(acceptor_mask);
  initiator.set_offered_suites_for_testing(initiator_mask);
  Reader in{data + 1, size - 1};
  bool i_proof_changed = false, a_proof_changed = false;
  initiator.set_proof_transform_for_testing(proof_change(in, &i_proof_changed));
  acceptor.set_proof_transform_for_testing(proof_change(in, &a_proof_changed));

  FrameDecoder at_acceptor(FrameDecoder::Phase::handshake), at_initiator(FrameDecoder::Phase::handshake);
  bool altered[3] = {false, false, false};
  if (initiator.start()) std::abort();  // the acceptor speaks first
  std::optional<Frame> challenge = acceptor.start();
  if (!challenge) std::abort();
  altered[0] = wire_change(in, *challenge);
  std::optional<Frame> response = deliver(at_initiator, initiator, *challenge);
  if (response) {
    altered[1] = wire_change(in, *response);
    std::optional<Frame> confirm = deliver(at_acceptor, acceptor, *response);
    if (confirm) {
      altered[2] = wire_change(in, *confirm);
      if (deliver(at_initiator, initiator, *confirm)) std::abort();  // the initiator has nothing more to say
    }
  }

  const bool suites_meet = (acceptor_mask & initiator_mask) != 0;
  if (initiator.done() && (altered[0] || altered[1] || altered[2] || a_proof_changed)) std::abort();
  if (acceptor.done() && (altered[0] || altered[1] || i_proof_changed || !admitted)) std::abort();
  if ((initiator.done() || acceptor.done()) && !suites_meet) std::abort();
  const bool honest = !altered[0] && !altered[1] && !altered[2] && !i_proof_changed && !a_proof_changed;
  if (honest && admitted && suites_meet) {
    if (!initiator.done() || !acceptor.done()) std::abort();  // an honest exchange failed
    check_session(initiator, acceptor);
    if (keyed && (initiator.peer_key() != acceptor_key.public_key() || acceptor.peer_key() != initiator_pk))
      std::abort();
  }
  return 0;
}

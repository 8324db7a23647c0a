// The opening of every mesh connection: a mutual authenticated key exchange
// built from libsodium's primitives, in the manner of SIGMA and Noise.
//
//   acceptor                                    initiator
//     challenge {mode, suites, eA}       ->
//                                        <-     response {mode, suite, eI,
//                                                  seal_hi(idI, auth_I(h2))}
//     check mode, open, verify, admit I
//     confirm {seal_ha(idA, auth_A(h2, idI))} ->
//                                               open, verify, admit A
//
//   eA, eI    fresh X25519 keys, one pair per connection and side
//   h1, h2    BLAKE2b-256 transcript hashes: h1 over a protocol label and the
//             challenge, h2 over h1 and the response's cleartext part
//   keys      X25519(eA, eI) and h2 (and in the shared-secret mode the run
//             secret too) give, through BLAKE2b and crypto_kdf, the two
//             handshake keys and the two frame keys (one per direction)
//   seal_h*   ChaCha20-Poly1305 under a handshake key, h2 as additional data:
//             identities are not sent in the clear
//   id, auth  node_keys: the Ed25519 public key and its signature over a
//             role label and the transcript (the acceptor's also over idI);
//             shared_secret: no id, HMAC-SHA256 with the run secret
//
// What that buys:
//  - each side proves it holds its key (or the secret) for this very
//    connection: signatures cover both fresh ephemerals, so nothing recorded
//    earlier can be replayed, and role labels stop reflection;
//  - an on-path attacker who alters any handshake byte (a downgrade of the
//    mode or the cipher suite included) breaks the transcript, so the
//    handshake fails;
//  - both modes are refused against each other: a node with keys never talks
//    to a node with only the shared secret, and says so;
//  - the frame keys are fresh per connection (forward secrecy: a node key
//    stolen later does not open recorded traffic).
//
// Benchmarks only (bench_allreduce --plaintext): a side built with
// unsealed_frames_for_benchmarks sets kUnsealedFramesFlag in its suite byte
// (the challenge's mask, the response's choice). That is a declaration, not
// an offer: each side refuses a peer whose flag differs from its own, by
// name, so a sealed node never talks plaintext to anyone, and the byte is in
// the transcript like every other, so an attacker who flips it breaks the
// handshake. Nothing in a node's config or on the network can set it.
//
// A Handshake is one side of one connection, owned by the transport's loop
// thread. It never throws on peer input: a bad frame moves it to
// State::failed with a reason for the log.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "dist/auth.h"
#include "dist/frame.h"
#include "dist/frame_cipher.h"
#include "dist/identity.h"

namespace intellect {

enum class AuthRole : uint8_t { initiator, acceptor };
const char* auth_role_name(AuthRole r);

constexpr size_t kEphemeralBytes = 32;
// In the suite byte of the challenge and the response: this side sends and
// expects unsealed frames after the handshake (benchmarks only, see above).
constexpr uint8_t kUnsealedFramesFlag = 0x80;
using EphemeralKey = std::array<uint8_t, kEphemeralBytes>;

// What a finished handshake hands the transport: the suite and this side's
// two frame keys. Wiped when destroyed.
struct SessionKeys {
  CipherSuite suite = CipherSuite::chacha20_poly1305;
  // Both sides were built with unsealed_frames_for_benchmarks (the
  // handshake refuses a mismatch): frames after it go as they are.
  bool unsealed_for_benchmarks = false;
  AeadKey send{}, recv{};
  SessionKeys() = default;
  SessionKeys(const SessionKeys&) = default;
  SessionKeys& operator=(const SessionKeys&) = default;
  ~SessionKeys();
};

class Handshake {
 public:
  enum class State { waiting, done, failed };
  // Answers whether an X25519 public key is one this process sent as an
  // acceptor on a connection still in its handshake. In the shared-secret
  // mode a challenge carrying one of ours is a peer relaying our own
  // handshake back to us; with node keys the identities already tell.
  using OwnEphemeralCheck = std::function<bool(const EphemeralKey&)>;

  Handshake(AuthRole role, PeerCredentials credentials, OwnEphemeralCheck own = {});
  ~Handshake();
  Handshake(const Handshake&) = delete;
  Handshake& operator=(const Handshake&) = delete;

  // The frame to send when the connection opens (the acceptor's challenge).
  std::optional<Frame> start();
  std::optional<Frame> on_frame(const Frame& frame);

  AuthRole role() const { return role_; }
  State state() const { return state_; }
  bool done() const { return state_ == State::done; }
  bool failed() const { return state_ == State::failed; }
  const std::string& failure() const { return failure_; }
  // The initiator answered the challenge with its proof and waits for the
  // acceptor's: a connection closed now was, most likely, refused by the
  // acceptor (it closes without a word on a proof or key it does not take).
  bool awaiting_peer_proof() const {
    return role_ == AuthRole::initiator && state_ == State::waiting && received_ == 1;
  }
  const EphemeralKey& own_ephemeral() const { return e_pk_; }

  // After done():
  const SessionKeys& session() const { return session_; }
  // The peer's node key (node_keys mode; nullopt with the shared secret).
  const std::optional<PublicKey>& peer_key() const { return peer_key_; }

  // Tests only: offer these suites (a bit mask of 1 << CipherSuite) instead
  // of what this CPU can do.
  void set_offered_suites_for_testing(uint8_t mask) { offered_ = mask; }
  // Tests and fuzzing only (fuzz/fuzz_handshake_pair.cpp): pass this side's
  // identity proof through `f` before it is sealed. It plays the peer that
  // completes the key exchange honestly and then proves something else,
  // which any outsider can do in the node-keys mode (the handshake keys need
  // no secret there), so the receiver's checks of the opened proof get
  // arbitrary input.
  using ProofTransform = std::function<std::vector<uint8_t>(std::vector<uint8_t>)>;
  void set_proof_transform_for_testing(ProofTransform f) { proof_transform_ = std::move(f); }
  // bench_allreduce --plaintext only (TransportOptions::
  // unsealed_frames_for_benchmarks): declare and require unsealed frames.
  // Before start().
  void set_unsealed_frames_for_benchmarks(bool on);

 private:
  std::optional<Frame> fail_with(std::string why);
  std::optional<Frame> on_challenge(const Frame& f);
  std::optional<Frame> on_response(const Frame& f);
  std::optional<Frame> on_confirm(const Frame& f);
  bool derive_keys(const EphemeralKey& peer_e, std::string* why);
  std::vector<uint8_t> identity_proof(AuthRole prover) const;
  std::string check_identity_proof(AuthRole prover, const uint8_t* p, size_t n);

  AuthRole role_;
  PeerCredentials cred_;
  OwnEphemeralCheck own_check_;
  State state_ = State::waiting;
  bool started_ = false;
  int received_ = 0;
  uint8_t offered_;
  bool unsealed_ = false;
  CipherSuite suite_ = CipherSuite::chacha20_poly1305;
  EphemeralKey e_pk_{};
  std::array<uint8_t, 32> e_sk_{};
  std::array<uint8_t, 32> h1_{}, h2_{};
  AeadKey hs_initiator_{}, hs_acceptor_{};  // the handshake's own seal keys
  SessionKeys session_;
  std::optional<PublicKey> peer_key_, initiator_key_;
  std::string failure_;
  ProofTransform proof_transform_;
};

}  // namespace intellect

// Mutual authentication of two mesh nodes that share a run secret.
//
// The acceptor speaks first but says nothing about the run: it sends only a
// fresh random nonce. The initiator answers with its own nonce and a proof
// (HMAC-SHA256 keyed with the secret over the initiator's role label, the
// protocol version and both nonces). Only after that proof verifies does the
// acceptor send its own proof (same, with the acceptor's label), which the
// initiator verifies in turn. So a peer without the secret learns one random
// nonce and is dropped; it cannot replay an old proof (the acceptor's nonce is
// fresh per connection) nor reflect one side's proof back as the other's (the
// role labels differ).
//
//   acceptor                         initiator
//     auth_challenge {nA}      ->
//                              <-    auth_response {nI, proof(initiator)}
//     verify; on failure drop
//     auth_confirm {proof(acceptor)} ->
//                                    verify; on failure drop
//
// Without transport encryption this authenticates connections, not bytes: an
// on-path attacker can still tamper with frames after the handshake.
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/frame.h"

namespace intellect {

constexpr size_t kMinSecretBytes = 32;
constexpr size_t kNonceBytes = 32;
constexpr size_t kProofBytes = 32;
using Nonce = std::array<uint8_t, kNonceBytes>;
using Proof = std::array<uint8_t, kProofBytes>;

// The run's shared secret. Held in memory that is wiped when the last copy
// goes away; copies are cheap (shared).
class RunSecret {
 public:
  RunSecret() = default;
  // Refuses fewer than kMinSecretBytes bytes.
  explicit RunSecret(std::vector<uint8_t> bytes, const std::string& where = "run secret");
  const std::vector<uint8_t>& bytes() const;
  bool empty() const { return !bytes_; }

 private:
  struct Wiped;
  std::shared_ptr<const Wiped> bytes_;
};

using AuthLog = std::function<void(const std::string&)>;

// Reads the secret file named in the config. One trailing newline (\n or
// \r\n) is dropped so `openssl rand -hex 32 > secret` works on every node
// alike. Refuses files shorter than kMinSecretBytes, and files that other
// users can read (the secret is the run's only admission control); warns
// through `warn` when the group can read it.
RunSecret load_run_secret(const std::string& path, const AuthLog& warn = {});

enum class AuthRole : uint8_t { initiator, acceptor };
const char* auth_role_name(AuthRole r);

// Pure functions: the handshake's cryptography without any state.
Nonce fresh_nonce();  // randombytes_buf
// The proof the `prover` side sends on the connection with these nonces.
Proof auth_proof(const RunSecret& secret, AuthRole prover, const Nonce& acceptor_nonce,
                 const Nonce& initiator_nonce, uint16_t version = kProtocolVersion);
// Constant-time comparison against the expected proof.
bool auth_verify(const RunSecret& secret, AuthRole prover, const Nonce& acceptor_nonce,
                 const Nonce& initiator_nonce, const Proof& proof,
                 uint16_t version = kProtocolVersion);

// One side of one connection's handshake. Feed it the frames the peer sent;
// it returns the frame to send back, if any. Never throws on peer input: a bad
// frame moves it to State::failed with a reason.
class Handshake {
 public:
  enum class State { waiting, done, failed };
  // Answers whether a nonce is one this process issued as acceptor on a
  // connection still in its handshake: a challenge equal to one of ours is a
  // peer trying to get our own proof to relay back to us.
  using OwnNonceCheck = std::function<bool(const Nonce&)>;

  Handshake(AuthRole role, RunSecret secret, OwnNonceCheck own_nonce = {});
  // The frame to send when the connection opens (the acceptor's challenge).
  std::optional<Frame> start();
  std::optional<Frame> on_frame(const Frame& frame);

  AuthRole role() const { return role_; }
  State state() const { return state_; }
  bool done() const { return state_ == State::done; }
  bool failed() const { return state_ == State::failed; }
  const std::string& failure() const { return failure_; }
  // This side's nonce (the acceptor's is set by start(); the initiator's when it answers).
  const Nonce& own_nonce() const { return own_; }

  // Tests only: use this nonce instead of a random one.
  void set_nonce_for_testing(const Nonce& n) { own_ = n, fixed_nonce_ = true; }

 private:
  std::optional<Frame> fail_with(std::string why);
  AuthRole role_;
  RunSecret secret_;
  OwnNonceCheck own_nonce_check_;
  State state_ = State::waiting;
  int step_ = 0;  // frames received so far
  bool started_ = false, fixed_nonce_ = false;
  Nonce own_{}, peer_{};
  std::string failure_;
};

}  // namespace intellect

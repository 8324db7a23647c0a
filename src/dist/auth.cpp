#include "dist/auth.h"

#include <sodium.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "util/error.h"
#include "util/file.h"

namespace intellect {

static std::string octal_mode(mode_t m) {
  char b[8];
  std::snprintf(b, sizeof b, "%03o", static_cast<unsigned>(m & 0777));
  return b;
}

static void ensure_sodium() {
  static const int rc = sodium_init();  // thread-safe, idempotent
  if (rc < 0) fail("libsodium failed to initialise (sodium_init); the mesh cannot authenticate peers");
}

struct RunSecret::Wiped {
  std::vector<uint8_t> v;
  ~Wiped() {
    if (!v.empty()) sodium_memzero(v.data(), v.size());
  }
};

RunSecret::RunSecret(std::vector<uint8_t> bytes, const std::string& where) {
  ensure_sodium();
  auto w = std::make_shared<Wiped>();
  w->v = std::move(bytes);
  if (w->v.size() < kMinSecretBytes)
    fail(where, " is ", w->v.size(), " bytes; it must be at least ", kMinSecretBytes,
         " (e.g. `openssl rand -hex 32 > secret`, copied to every node)");
  bytes_ = std::move(w);
}

const std::vector<uint8_t>& RunSecret::bytes() const {
  INTELLECT_CHECK(bytes_, "RunSecret used before it was loaded");
  return bytes_->v;
}

RunSecret load_run_secret(const std::string& path, const AuthLog& warn) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    fail("cannot read the run secret '", path, "': ", std::strerror(errno),
         "; create it with `openssl rand -hex 32 > ", path, " && chmod 600 ", path,
         "` and copy it to every node");
  if (!S_ISREG(st.st_mode)) fail("run secret '", path, "' is not a regular file");
  if (st.st_mode & S_IROTH)
    fail("run secret '", path, "' is readable by every user on this machine (mode ",
         octal_mode(st.st_mode), "); run `chmod 600 ", path, "`");
  if ((st.st_mode & S_IRGRP) && warn)
    warn(str("warning: run secret '", path, "' is readable by its group (mode ",
             octal_mode(st.st_mode), "); consider `chmod 600 ", path, "`"));
  std::vector<uint8_t> b = read_file(path);
  if (!b.empty() && b.back() == '\n') b.pop_back();
  if (!b.empty() && b.back() == '\r') b.pop_back();
  return RunSecret(std::move(b), str("run secret '", path, "'"));
}

const char* auth_role_name(AuthRole r) { return r == AuthRole::initiator ? "initiator" : "acceptor"; }

Nonce fresh_nonce() {
  ensure_sodium();
  Nonce n;
  randombytes_buf(n.data(), n.size());
  return n;
}

// Distinct per role, so a proof made for one direction never verifies as the
// other; the terminating NUL keeps label and version unambiguous.
static const char* role_label(AuthRole r) {
  return r == AuthRole::initiator ? "intellect mesh handshake: initiator proof"
                                  : "intellect mesh handshake: acceptor proof";
}

Proof auth_proof(const RunSecret& secret, AuthRole prover, const Nonce& acceptor_nonce,
                 const Nonce& initiator_nonce, uint16_t version) {
  const std::vector<uint8_t>& key = secret.bytes();
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, key.data(), key.size());
  const char* label = role_label(prover);
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const uint8_t*>(label), std::strlen(label) + 1);
  const uint8_t v[2] = {static_cast<uint8_t>(version), static_cast<uint8_t>(version >> 8)};
  crypto_auth_hmacsha256_update(&st, v, 2);
  crypto_auth_hmacsha256_update(&st, acceptor_nonce.data(), acceptor_nonce.size());
  crypto_auth_hmacsha256_update(&st, initiator_nonce.data(), initiator_nonce.size());
  Proof p;
  crypto_auth_hmacsha256_final(&st, p.data());
  sodium_memzero(&st, sizeof st);
  return p;
}

bool auth_verify(const RunSecret& secret, AuthRole prover, const Nonce& acceptor_nonce,
                 const Nonce& initiator_nonce, const Proof& proof, uint16_t version) {
  Proof want = auth_proof(secret, prover, acceptor_nonce, initiator_nonce, version);
  static_assert(kProofBytes == crypto_verify_32_BYTES);
  return crypto_verify_32(want.data(), proof.data()) == 0;
}

Handshake::Handshake(AuthRole role, RunSecret secret, OwnNonceCheck own_nonce)
    : role_(role), secret_(std::move(secret)), own_nonce_check_(std::move(own_nonce)) {
  INTELLECT_CHECK(!secret_.empty(), "Handshake needs a loaded run secret");
}

std::optional<Frame> Handshake::fail_with(std::string why) {
  state_ = State::failed;
  failure_ = std::move(why);
  return std::nullopt;
}

std::optional<Frame> Handshake::start() {
  INTELLECT_CHECK(!started_, "Handshake::start called twice");
  started_ = true;
  if (!fixed_nonce_) own_ = fresh_nonce();
  if (role_ == AuthRole::initiator) return std::nullopt;  // the acceptor speaks first
  Frame f{FrameType::auth_challenge, std::vector<uint8_t>(own_.begin(), own_.end())};
  return f;
}

std::optional<Frame> Handshake::on_frame(const Frame& frame) {
  INTELLECT_CHECK(started_, "Handshake::on_frame called before start()");
  if (state_ != State::waiting)
    return fail_with(str("unexpected ", frame_type_name(frame.type), " frame after the handshake ",
                         state_ == State::done ? "finished" : "failed"));
  const int step = step_++;
  const auto& p = frame.payload;
  if (role_ == AuthRole::acceptor) {
    if (frame.type != FrameType::auth_response || p.size() != kNonceBytes + kProofBytes)
      return fail_with(str("expected an auth_response frame of ", kNonceBytes + kProofBytes,
                           " bytes, got ", frame_type_name(frame.type), " of ", p.size(), " bytes"));
    std::memcpy(peer_.data(), p.data(), kNonceBytes);
    Proof proof;
    std::memcpy(proof.data(), p.data() + kNonceBytes, kProofBytes);
    if (sodium_memcmp(peer_.data(), own_.data(), kNonceBytes) == 0)
      return fail_with("the initiator echoed our own nonce back (a reflection attempt)");
    if (!auth_verify(secret_, AuthRole::initiator, own_, peer_, proof))
      return fail_with(
          "the initiator's proof does not verify: it does not hold this run's secret "
          "(check that every node uses the same secret file)");
    state_ = State::done;
    Proof mine = auth_proof(secret_, AuthRole::acceptor, own_, peer_);
    return Frame{FrameType::auth_confirm, std::vector<uint8_t>(mine.begin(), mine.end())};
  }
  if (step == 0) {
    if (frame.type != FrameType::auth_challenge || p.size() != kNonceBytes)
      return fail_with(str("expected an auth_challenge frame of ", kNonceBytes, " bytes, got ",
                           frame_type_name(frame.type), " of ", p.size(), " bytes"));
    std::memcpy(peer_.data(), p.data(), kNonceBytes);
    if (sodium_memcmp(peer_.data(), own_.data(), kNonceBytes) == 0 ||
        (own_nonce_check_ && own_nonce_check_(peer_)))
      return fail_with(
          "the acceptor's challenge is a nonce this process issued itself: someone is trying to "
          "relay our own proof back to us");
    Proof mine = auth_proof(secret_, AuthRole::initiator, peer_, own_);
    Frame f{FrameType::auth_response, {}};
    f.payload.reserve(kNonceBytes + kProofBytes);
    f.payload.insert(f.payload.end(), own_.begin(), own_.end());
    f.payload.insert(f.payload.end(), mine.begin(), mine.end());
    return f;
  }
  if (frame.type != FrameType::auth_confirm || p.size() != kProofBytes)
    return fail_with(str("expected an auth_confirm frame of ", kProofBytes, " bytes, got ",
                         frame_type_name(frame.type), " of ", p.size(), " bytes"));
  Proof proof;
  std::memcpy(proof.data(), p.data(), kProofBytes);
  if (!auth_verify(secret_, AuthRole::acceptor, peer_, own_, proof))
    return fail_with(
        "the acceptor's proof does not verify: the node we dialled does not hold this run's "
        "secret (check that every node uses the same secret file)");
  state_ = State::done;
  return std::nullopt;
}

}  // namespace intellect

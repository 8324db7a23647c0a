// What a node proves itself with on the mesh, in one of two modes:
//
//   node_keys      each node holds an Ed25519 key of its own (identity.h);
//                  a peer is admitted when its key is on the run's allowlist.
//                  For runs across machines and people you do not control.
//   shared_secret  every node holds the same run secret. Any holder can pose
//                  as any node and none can be revoked alone: for small runs
//                  among machines you trust.
//
// Either way, every connection then runs the handshake in handshake.h and
// every frame after it is encrypted and authenticated (frame_cipher.h).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "dist/identity.h"

namespace intellect {

constexpr size_t kMinSecretBytes = 32;

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

enum class AuthMode : uint8_t { shared_secret = 1, node_keys = 2 };
const char* auth_mode_name(AuthMode m);

// Answers whether a peer's key is admitted: empty when it is, else why not
// (for the log). Called on a transport's loop thread, so it must be quick and
// thread-safe.
using PeerAdmission = std::function<std::string(const PublicKey&)>;

struct PeerCredentials {
  AuthMode mode = AuthMode::shared_secret;
  RunSecret secret;     // shared_secret
  NodeKey key;          // node_keys: this node's own key
  PeerAdmission admit;  // node_keys: the allowlist check

  PeerCredentials() = default;
  // The shared-secret mode (implicit: where a RunSecret was enough before, it still is).
  PeerCredentials(RunSecret s) : mode(AuthMode::shared_secret), secret(std::move(s)) {}
  static PeerCredentials keyed(NodeKey key, PeerAdmission admit);
  bool empty() const { return mode == AuthMode::shared_secret ? secret.empty() : key.empty(); }
  // "shared secret" or "node key ed25519:0123456789abcdef".
  std::string describe() const;
};

// An admission check that rereads an allowlist file when it changes (at most
// once a second), shared by every transport of a process. A file made bad by
// an edit keeps the previous list and is reported through `log` once.
PeerAdmission allowlist_admission(const std::string& path, std::function<void(const std::string&)> log = {});
// Makes every allowlist admission reread its file at its next check, changed
// or not (SIGHUP). Async-signal-safe.
void request_allowlist_reload();

// A node's credentials from its config: the node key and allowlist when
// node_key_file is set, else the shared secret. Fails with what to do when
// the combination is incomplete or both modes are configured.
PeerCredentials load_credentials(const std::string& secret_file, const std::string& node_key_file,
                                 const std::string& allowlist_file, const AuthLog& log = {});

}  // namespace intellect

// A node's identity on the open internet: an Ed25519 key pair of its own
// (libsodium's crypto_sign), instead of one secret every node shares.
//
//   intellect_keygen --out node.key     -> node.key (secret, mode 600) and node.key.pub
//   cat */node.key.pub > allowlist      -> the keys the coordinator admits
//
// A public key is named in logs, metrics and the coordinator's state by its
// fingerprint, "ed25519:" and the first 16 hex digits of its BLAKE2b-256.
// The .pub file and the allowlist share one line format,
//   <64 hex digits of the public key> [name]
// with '#' comments and blank lines allowed, so an allowlist is the
// concatenation of the members' .pub files.
//
// Ownership: a NodeKey is immutable once loaded and can be shared across
// threads; its secret half lives in memory wiped when the last copy goes.
// AllowlistFile is owned by one thread (the coordinator's loop).
#pragma once
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <ctime>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace intellect {

constexpr size_t kPublicKeyBytes = 32;
constexpr size_t kSignatureBytes = 64;
using PublicKey = std::array<uint8_t, kPublicKeyBytes>;
using Signature = std::array<uint8_t, kSignatureBytes>;

std::string public_key_hex(const PublicKey& pk);
// "ed25519:0123456789abcdef": short, stable, what logs and metrics show.
std::string fingerprint(const PublicKey& pk);
// 64 hex digits; `where` names the source in the error.
PublicKey parse_public_key(const std::string& hex, const std::string& where);

bool verify_signature(const PublicKey& pk, std::span<const uint8_t> message, const Signature& sig);

class NodeKey {
 public:
  NodeKey() = default;
  static NodeKey generate();
  bool empty() const { return !secret_; }
  const PublicKey& public_key() const { return pk_; }
  std::string fingerprint() const { return intellect::fingerprint(pk_); }
  Signature sign(std::span<const uint8_t> message) const;

  // The secret key file: "intellect-node-key v1", then "secret <128 hex>"
  // (libsodium's 64-byte secret key, which holds the public half too).
  std::string encode_secret_file() const;
  static NodeKey decode_secret_file(const std::string& text, const std::string& where);

 private:
  struct Wiped;
  std::shared_ptr<const Wiped> secret_;
  PublicKey pk_{};
};

// Writes `path` (mode 600, atomically) and `path`.pub; refuses to overwrite
// an existing key (a lost key is a node that can no longer be admitted).
void write_node_key(const std::string& path, const NodeKey& key, const std::string& name);
// Refuses a file other users can read, or that is not a key file.
NodeKey load_node_key(const std::string& path);

// The keys a coordinator admits, with the names their lines give.
class Allowlist {
 public:
  // Refuses malformed lines (with their line number) and repeated keys.
  static Allowlist parse(const std::string& text, const std::string& where);
  bool allows(const PublicKey& pk) const { return names_.count(pk) != 0; }
  // The line's name, or the fingerprint when the line had none.
  std::string name_of(const PublicKey& pk) const;
  size_t size() const { return names_.size(); }
  std::vector<PublicKey> keys() const;

 private:
  std::map<PublicKey, std::string> names_;
};

// An allowlist file, reread when it changes (its modification time, size or
// inode; an editor's rename counts) or when asked (SIGHUP).
class AllowlistFile {
 public:
  explicit AllowlistFile(std::string path);  // reads it now; fails if it cannot
  const std::string& path() const { return path_; }
  const Allowlist& current() const { return list_; }
  // True when the list was reread. A file that became unreadable or
  // malformed keeps the previous list and says why in *error: a typo while
  // editing must not evict the whole run.
  bool reload_if_changed(std::string* error, bool force = false);

 private:
  std::string path_;
  Allowlist list_;
  struct timespec mtime_{};
  off_t size_ = -1;
  ino_t inode_ = 0;
};

}  // namespace intellect

#include "dist/identity.h"

#include <sodium.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "util/error.h"
#include "util/file.h"

namespace intellect {

namespace {

void ensure_sodium() {
  static const int rc = sodium_init();  // thread-safe, idempotent
  if (rc < 0) fail("libsodium failed to initialise (sodium_init)");
}

std::string to_hex(const uint8_t* p, size_t n) {
  std::string s(2 * n + 1, '\0');
  sodium_bin2hex(s.data(), s.size(), p, n);
  s.pop_back();
  return s;
}

// Exactly `n` bytes from 2n hex digits, or false.
bool from_hex(const std::string& hex, uint8_t* out, size_t n) {
  if (hex.size() != 2 * n) return false;
  size_t got = 0;
  const char* end = nullptr;
  return sodium_hex2bin(out, n, hex.data(), hex.size(), nullptr, &got, &end) == 0 && got == n &&
         end == hex.data() + hex.size();
}

std::string octal_mode(mode_t m) {
  char b[8];
  std::snprintf(b, sizeof b, "%03o", static_cast<unsigned>(m & 0777));
  return b;
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t\r") - b + 1);
}

}  // namespace

std::string public_key_hex(const PublicKey& pk) { return to_hex(pk.data(), pk.size()); }

std::string fingerprint(const PublicKey& pk) {
  ensure_sodium();
  uint8_t h[32];
  crypto_generichash(h, sizeof h, pk.data(), pk.size(), nullptr, 0);
  return "ed25519:" + to_hex(h, 8);
}

PublicKey parse_public_key(const std::string& hex, const std::string& where) {
  PublicKey pk{};
  if (!from_hex(hex, pk.data(), pk.size()))
    fail(where, ": '", hex.substr(0, 80), "' is not a public key (64 hex digits, as intellect_keygen writes to "
         "<key>.pub)");
  return pk;
}

bool verify_signature(const PublicKey& pk, std::span<const uint8_t> message, const Signature& sig) {
  ensure_sodium();
  return crypto_sign_verify_detached(sig.data(), message.data(), message.size(), pk.data()) == 0;
}

struct NodeKey::Wiped {
  std::array<uint8_t, crypto_sign_SECRETKEYBYTES> sk{};
  ~Wiped() { sodium_memzero(sk.data(), sk.size()); }
};

NodeKey NodeKey::generate() {
  ensure_sodium();
  auto w = std::make_shared<Wiped>();
  NodeKey k;
  crypto_sign_keypair(k.pk_.data(), w->sk.data());
  k.secret_ = std::move(w);
  return k;
}

Signature NodeKey::sign(std::span<const uint8_t> message) const {
  INTELLECT_CHECK(secret_, "NodeKey::sign on an empty key");
  Signature sig{};
  crypto_sign_detached(sig.data(), nullptr, message.data(), message.size(), secret_->sk.data());
  return sig;
}

std::string NodeKey::encode_secret_file() const {
  INTELLECT_CHECK(secret_, "NodeKey::encode_secret_file on an empty key");
  std::string hex = to_hex(secret_->sk.data(), secret_->sk.size());
  std::string text = "intellect-node-key v1\nsecret " + hex + "\n";
  sodium_memzero(hex.data(), hex.size());
  return text;
}

NodeKey NodeKey::decode_secret_file(const std::string& text, const std::string& where) {
  ensure_sodium();
  std::istringstream in(text);
  std::string magic, line;
  std::getline(in, magic);
  if (trim(magic) != "intellect-node-key v1")
    fail(where, " is not an intellect node key (its first line should be 'intellect-node-key v1'; make one with "
         "intellect_keygen)");
  std::getline(in, line);
  line = trim(line);
  auto w = std::make_shared<Wiped>();
  const bool ok = line.rfind("secret ", 0) == 0 && from_hex(line.substr(7), w->sk.data(), w->sk.size());
  sodium_memzero(line.data(), line.size());
  if (!ok) fail(where, ": the 'secret' line is missing or is not 128 hex digits");
  NodeKey k;
  // The public half is the secret key's last 32 bytes; check it matches.
  crypto_sign_ed25519_sk_to_pk(k.pk_.data(), w->sk.data());
  uint8_t seed[crypto_sign_SEEDBYTES], pk[crypto_sign_PUBLICKEYBYTES];
  std::array<uint8_t, crypto_sign_SECRETKEYBYTES> sk2{};
  crypto_sign_ed25519_sk_to_seed(seed, w->sk.data());
  crypto_sign_seed_keypair(pk, sk2.data(), seed);
  const bool consistent = sodium_memcmp(sk2.data(), w->sk.data(), sk2.size()) == 0;
  sodium_memzero(seed, sizeof seed);
  sodium_memzero(sk2.data(), sk2.size());
  if (!consistent) fail(where, ": the key is damaged (its public half does not belong to its secret half)");
  k.secret_ = std::move(w);
  return k;
}

void write_node_key(const std::string& path, const NodeKey& key, const std::string& name) {
  struct stat st;
  for (const std::string& p : {path, path + ".pub"})
    if (::stat(p.c_str(), &st) == 0)
      fail("'", p, "' exists: a node key is never overwritten (a lost key is a node that can no longer be "
           "admitted); move it away or choose another --out");
  {
    std::string text = key.encode_secret_file();
    AtomicFile f(path, 0600);
    f.write(text.data(), text.size());
    sodium_memzero(text.data(), text.size());
    f.commit();
  }
  const std::string pub = public_key_hex(key.public_key()) + (name.empty() ? "" : " " + name) + "\n";
  write_file_atomic(path + ".pub", pub.data(), pub.size());
}

NodeKey load_node_key(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0)
    fail("cannot read the node key '", path, "': ", std::strerror(errno),
         "; make one with `intellect_keygen --out ", path, "`");
  if (!S_ISREG(st.st_mode)) fail("node key '", path, "' is not a regular file");
  if (st.st_mode & (S_IRGRP | S_IROTH | S_IWGRP | S_IWOTH))
    fail("node key '", path, "' can be read or written by other users (mode ", octal_mode(st.st_mode),
         "); run `chmod 600 ", path, "`");
  std::string text = read_text_file(path);
  NodeKey k = NodeKey::decode_secret_file(text, "node key '" + path + "'");
  sodium_memzero(text.data(), text.size());
  return k;
}

Allowlist Allowlist::parse(const std::string& text, const std::string& where) {
  Allowlist a;
  std::istringstream in(text);
  std::string line;
  for (int n = 1; std::getline(in, line); ++n) {
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    line = trim(line);
    if (line.empty()) continue;
    const size_t sp = line.find_first_of(" \t");
    const std::string key = line.substr(0, sp);
    const std::string name = sp == std::string::npos ? "" : trim(line.substr(sp));
    if (name.size() > 64) fail(where, ":", n, ": the name is longer than 64 characters");
    const PublicKey pk = parse_public_key(key, str(where, ":", n));
    if (!a.names_.emplace(pk, name).second)
      fail(where, ":", n, ": key ", fingerprint(pk), " is listed twice");
  }
  return a;
}

std::string Allowlist::name_of(const PublicKey& pk) const {
  const auto it = names_.find(pk);
  return it == names_.end() || it->second.empty() ? fingerprint(pk) : it->second;
}

std::vector<PublicKey> Allowlist::keys() const {
  std::vector<PublicKey> v;
  for (const auto& [k, n] : names_) v.push_back(k);
  return v;
}

AllowlistFile::AllowlistFile(std::string path) : path_(std::move(path)) {
  std::string error;
  reload_if_changed(&error, true);
  if (!error.empty()) fail(error);
}

bool AllowlistFile::reload_if_changed(std::string* error, bool force) {
  struct stat st;
  if (::stat(path_.c_str(), &st) != 0) {
    // Said once, not every time the loop looks.
    if (error && (size_ != -2 || force))
      *error = str("cannot read the allowlist '", path_, "': ", std::strerror(errno), "; keeping the previous list "
                   "of ", list_.size(), " key(s)");
    size_ = -2;
    return false;
  }
  const bool changed = st.st_mtim.tv_sec != mtime_.tv_sec || st.st_mtim.tv_nsec != mtime_.tv_nsec ||
                       st.st_size != size_ || st.st_ino != inode_;
  if (!changed && !force) return false;
  try {
    Allowlist next = Allowlist::parse(read_text_file(path_), "allowlist '" + path_ + "'");
    list_ = std::move(next);
    mtime_ = st.st_mtim;
    size_ = st.st_size;
    inode_ = st.st_ino;
    if (error) error->clear();
    return true;
  } catch (const Error& e) {
    // Not reread until it changes again (said once per bad version).
    mtime_ = st.st_mtim;
    size_ = st.st_size;
    inode_ = st.st_ino;
    if (error) *error = str(e.what(), "; keeping the previous list of ", list_.size(), " key(s)");
    return false;
  }
}

}  // namespace intellect

#include "dist/auth.h"

#include <sodium.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <atomic>
#include <chrono>
#include <cstring>
#include <mutex>

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

const char* auth_mode_name(AuthMode m) { return m == AuthMode::node_keys ? "node keys" : "shared secret"; }

PeerCredentials PeerCredentials::keyed(NodeKey key, PeerAdmission admit) {
  if (key.empty()) fail("node-key credentials need a loaded node key");
  if (!admit) fail("node-key credentials need an admission check (the allowlist)");
  PeerCredentials c;
  c.mode = AuthMode::node_keys;
  c.key = std::move(key);
  c.admit = std::move(admit);
  return c;
}

std::string PeerCredentials::describe() const {
  return mode == AuthMode::node_keys ? str("node key ", key.fingerprint()) : std::string("shared secret");
}

namespace {
std::atomic<uint64_t> g_reload_requests{0};
static_assert(std::atomic<uint64_t>::is_always_lock_free, "request_allowlist_reload must be async-signal-safe");

// One allowlist file behind a mutex: transports' loop threads ask, and the
// first ask after a second has passed rereads the file if it changed.
struct SharedAllowlist {
  std::mutex mu;
  AllowlistFile file;
  std::function<void(const std::string&)> log;
  std::chrono::steady_clock::time_point checked = std::chrono::steady_clock::now();
  std::string last_error;
  uint64_t reloads_seen = g_reload_requests.load();
  explicit SharedAllowlist(const std::string& path) : file(path) {}

  std::string admit(const PublicKey& pk) {
    std::lock_guard lk(mu);
    const auto now = std::chrono::steady_clock::now();
    const uint64_t requested = g_reload_requests.load();
    if (now - checked >= std::chrono::seconds(1) || requested != reloads_seen) {
      checked = now;
      const bool force = requested != reloads_seen;
      reloads_seen = requested;
      std::string error;
      if (file.reload_if_changed(&error, force) && log)
        log(str("allowlist '", file.path(), "' reread: ", file.current().size(), " keys"));
      if (!error.empty() && error != last_error && log) log(error);
      last_error = error;
    }
    if (file.current().allows(pk)) return "";
    return str("key ", fingerprint(pk), " is not on the allowlist '", file.path(),
               "' (add its .pub line there to admit it)");
  }
};
}  // namespace

void request_allowlist_reload() { g_reload_requests.fetch_add(1); }

PeerCredentials load_credentials(const std::string& secret_file, const std::string& node_key_file,
                                 const std::string& allowlist_file, const AuthLog& log) {
  if (!node_key_file.empty() && !secret_file.empty())
    fail("both mesh.node_key_file and mesh.secret_file are set: a run uses node keys or a shared secret, not both "
         "(keys are for runs on the open internet; keep only mesh.node_key_file)");
  if (!node_key_file.empty()) {
    if (allowlist_file.empty())
      fail("mesh.node_key_file needs mesh.allowlist_file: the public keys this node accepts as peers (the .pub lines "
           "of every node and of the coordinator)");
    NodeKey key = load_node_key(node_key_file);
    return PeerCredentials::keyed(std::move(key), allowlist_admission(allowlist_file, log));
  }
  if (!allowlist_file.empty())
    fail("mesh.allowlist_file is set without mesh.node_key_file: an allowlist admits node keys; make this node's "
         "key with `intellect_keygen --out node.key` and set mesh.node_key_file");
  if (secret_file.empty())
    fail("the mesh needs credentials: mesh.node_key_file with mesh.allowlist_file (node keys), or "
         "mesh.secret_file (one secret every node shares)");
  return PeerCredentials(load_run_secret(secret_file, log));
}

PeerAdmission allowlist_admission(const std::string& path, std::function<void(const std::string&)> log) {
  auto shared = std::make_shared<SharedAllowlist>(path);
  shared->log = std::move(log);
  return [shared](const PublicKey& pk) { return shared->admit(pk); };
}

}  // namespace intellect

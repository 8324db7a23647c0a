// intellect_keygen: makes a node's Ed25519 key pair (dist/identity.h).
//
//   intellect_keygen --out node.key [--name NAME]
//
// writes node.key (the secret, mode 600) and node.key.pub (one allowlist
// line: the public key and the name), and prints the fingerprint that logs
// and metrics will show for this node. Never overwrites a key.
//   intellect_keygen --show node.key     prints the public line and fingerprint of an existing key
#include <cstdio>
#include <string>

#include "dist/identity.h"
#include "util/error.h"

namespace {

void usage(FILE* f) {
  std::fprintf(f,
               "usage: intellect_keygen --out FILE [--name NAME]   make a node key pair: FILE (secret, mode 600)\n"
               "                                                    and FILE.pub (add its line to the run's allowlist)\n"
               "       intellect_keygen --show FILE                 print an existing key's public line and fingerprint\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string out, name, show;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "intellect_keygen: %s needs a value\n", a.c_str());
        usage(stderr);
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--out") out = value();
    else if (a == "--name") name = value();
    else if (a == "--show") show = value();
    else if (a == "-h" || a == "--help") { usage(stdout); return 0; }
    else {
      std::fprintf(stderr, "intellect_keygen: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  if (out.empty() == show.empty()) {
    usage(stderr);
    return 2;
  }
  try {
    if (!show.empty()) {
      const intellect::NodeKey k = intellect::load_node_key(show);
      std::printf("%s\n%s\n", intellect::public_key_hex(k.public_key()).c_str(), k.fingerprint().c_str());
      return 0;
    }
    if (name.find_first_of(" \t\n#") != std::string::npos || name.size() > 64) {
      std::fprintf(stderr, "intellect_keygen: --name must be one word of at most 64 characters, without '#'\n");
      return 2;
    }
    const intellect::NodeKey k = intellect::NodeKey::generate();
    intellect::write_node_key(out, k, name);
    std::printf("wrote %s (secret, mode 600) and %s.pub\nfingerprint %s\n"
                "add the line of %s.pub to the run's allowlist (mesh.allowlist_file on the coordinator)\n",
                out.c_str(), out.c_str(), k.fingerprint().c_str(), out.c_str());
    return 0;
  } catch (const intellect::Error& e) {
    std::fprintf(stderr, "intellect_keygen: error: %s\n", e.what());
    return 1;
  }
}

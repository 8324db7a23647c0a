// bench_aead: how fast one core seals and opens a frame's payload with each
// AEAD library (frame_cipher.h) and suite, at the sizes the mesh sends: a
// ring message of the int8 codec's default chunk (2^18 values: 266,304
// bytes), a control-sized frame, and a state-transfer chunk (4 MiB).
//   bench_aead [--repeat 200]
// GB/s of payload, the best of three runs of `repeat` calls (tools/bench_timing.h).
// Also prints whether AES-256-GCM is chosen here (AES-NI and CLMUL) and the
// CPU's vector AES flags, which decide how fast OpenSSL's AES-GCM runs.
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "bench_timing.h"
#include "dist/frame.h"
#include "dist/frame_cipher.h"
#include "util/error.h"

namespace {

using namespace intellect;

std::string cpu_flags_of_interest() {
  std::ifstream f("/proc/cpuinfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> have;
    for (std::string w; words >> w;) have.insert(w);
    std::string out;
    for (const char* want : {"aes", "pclmulqdq", "avx2", "avx512f", "vaes", "vpclmulqdq"})
      out += str(want, have.count(want) ? "+ " : "- ");
    return out;
  }
  return "(no /proc/cpuinfo flags)";
}

}  // namespace

int main(int argc, char** argv) {
  int repeat = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::string(argv[i]) == "--repeat") repeat = std::atoi(argv[i + 1]);
    else return std::fprintf(stderr, "usage: bench_aead [--repeat N]\n"), 2;
  }
  if (repeat < 1) return 2;
  try {
    std::printf("bench_aead: one core; CPU flags %s; AES-256-GCM %s\n", cpu_flags_of_interest().c_str(),
                aes256gcm_available() ? "available (chosen for links)" : "unavailable (links use ChaCha20-Poly1305)");
    std::vector<CipherSuite> suites = {CipherSuite::chacha20_poly1305};
    if (aes256gcm_available()) suites.insert(suites.begin(), CipherSuite::aes256_gcm);
    AeadKey key{};
    for (size_t i = 0; i < key.size(); ++i) key[i] = static_cast<uint8_t>(i * 37 + 1);
    for (size_t bytes : {size_t{4096}, size_t{266304}, size_t{4} << 20}) {
      std::vector<uint8_t> data(bytes, 0x5a);
      const FrameHeader ad = encode_frame_header(FrameType::data, bytes + kAeadTagBytes, kAeadTagBytes);
      const int n = std::max(1, static_cast<int>(repeat * (266304.0 / static_cast<double>(bytes))));
      for (CipherSuite s : suites)
        for (AeadLibrary lib : {AeadLibrary::openssl, AeadLibrary::libsodium}) {
          FrameCipher c(s, key, lib);
          uint8_t tag[kAeadTagBytes];
          uint64_t pos = 0;
          const double seal_us = bench::best_us(n, [&] { c.seal(pos++, ad.data(), ad.size(), data.data(), bytes, tag); });
          // Each open gets a fresh copy of one sealed frame (opening in
          // place leaves plaintext); the copy's own time is taken off.
          c.seal(pos, ad.data(), ad.size(), data.data(), bytes, tag);
          const std::vector<uint8_t> sealed = data;
          const double copy_us = bench::best_us(n, [&] { std::copy(sealed.begin(), sealed.end(), data.begin()); });
          const double open_us = bench::best_us(n, [&] {
            std::copy(sealed.begin(), sealed.end(), data.begin());
            if (!c.open(pos, ad.data(), ad.size(), data.data(), bytes, tag)) fail("a frame sealed here did not open");
          }) - copy_us;
          std::printf("%8zu bytes  %-17s %-9s  seal %6.2f GB/s  open %6.2f GB/s\n", bytes, cipher_suite_name(s),
                      aead_library_name(lib), bytes / seal_us / 1e3, bytes / open_us / 1e3);
        }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_aead: %s\n", e.what());
    return 1;
  }
  return 0;
}

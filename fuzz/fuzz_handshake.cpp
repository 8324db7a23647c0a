// libFuzzer target: a peer that sends arbitrary bytes during the handshake.
// The bytes go through FrameDecoder (handshake phase) into a Handshake of
// either role and either mode, as the transport would feed them. A peer
// without the secret (or without a key whose signature covers this very
// connection's transcript) must never reach State::done, and nothing may
// crash or read out of bounds.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "dist/auth.h"
#include "dist/frame.h"
#include "dist/handshake.h"

using namespace intellect;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const RunSecret secret(std::vector<uint8_t>(32, 0x42));
  static const NodeKey key = NodeKey::generate();
  AuthRole role = (data[0] & 1) ? AuthRole::acceptor : AuthRole::initiator;
  // Node-key mode admits every key: the signature over the transcript is
  // what must stop the fuzzer.
  PeerCredentials cred = (data[0] & 2) ? PeerCredentials::keyed(key, [](const PublicKey&) { return std::string(); })
                                       : PeerCredentials(secret);
  Handshake hs(role, cred);
  hs.start();

  FrameDecoder dec(FrameDecoder::Phase::handshake);
  const uint8_t* p = data + 1;
  size_t n = size - 1;
  while (n > 0 && !dec.failed() && !hs.failed()) {
    size_t k = dec.feed(p, n);
    p += k;
    n -= k;
    if (dec.ready()) {
      std::optional<Frame> reply = hs.on_frame(dec.take());
      if (reply) encode_frame(*reply);  // what we would send must be a valid frame
      if (hs.done()) std::abort();     // authenticated without the secret or a key
    }
  }
  return 0;
}

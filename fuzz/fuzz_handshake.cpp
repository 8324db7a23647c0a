// libFuzzer target: a peer that sends arbitrary bytes during the handshake.
// The bytes go through FrameDecoder (handshake phase) into a Handshake of
// either role, as the transport would feed them. A peer without the secret
// must never reach State::done, and nothing may crash or read out of bounds.
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "dist/auth.h"
#include "dist/frame.h"

using namespace intellect;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  static const RunSecret secret(std::vector<uint8_t>(32, 0x42));
  AuthRole role = (data[0] & 1) ? AuthRole::acceptor : AuthRole::initiator;
  Handshake hs(role, secret);
  // A fixed nonce keeps runs reproducible; it does not help forge a proof.
  Nonce fixed{};
  fixed[0] = data[0];
  hs.set_nonce_for_testing(fixed);
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
      if (hs.done()) std::abort();     // authenticated without the secret
    }
  }
  return 0;
}

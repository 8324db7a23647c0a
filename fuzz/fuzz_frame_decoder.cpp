// libFuzzer target: arbitrary bytes, cut into arbitrary pieces, into
// FrameDecoder. Beyond "no crash, no out-of-bounds access" (ASan/UBSan) it
// checks the decoder's contract: it never consumes more than it was given,
// a failed stream consumes nothing more, and the frames it yields re-encode
// to exactly the bytes it consumed.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "dist/frame.h"

using namespace intellect;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  // Byte 0: phase and the piece size; the rest is the stream.
  auto phase = (data[0] & 1) ? FrameDecoder::Phase::handshake : FrameDecoder::Phase::established;
  size_t piece = 1 + (data[0] >> 1);  // 1..128: exercises every split of a header
  const uint8_t* p = data + 1;
  size_t n = size - 1;

  FrameDecoder dec(phase);
  std::vector<uint8_t> reencoded;
  size_t consumed = 0;
  while (consumed < n) {
    size_t give = std::min(piece, n - consumed);
    size_t k = dec.feed(p + consumed, give);
    if (k > give) std::abort();
    consumed += k;
    if (dec.ready()) {
      Frame f = dec.take();
      std::vector<uint8_t> e = encode_frame(f);
      reencoded.insert(reencoded.end(), e.begin(), e.end());
      // Alternate phases as the transport does after a handshake.
      if (f.type == FrameType::auth_confirm) dec.set_phase(FrameDecoder::Phase::established);
      continue;
    }
    if (dec.failed()) {
      if (dec.error_message().empty()) std::abort();
      if (dec.feed(p + consumed, n - consumed) != 0) std::abort();
      break;
    }
    if (k == 0) std::abort();  // neither progress, nor a frame, nor an error
  }
  // Whatever was consumed is complete frames plus, at most, one partial frame.
  if (reencoded.size() > consumed ||
      (!reencoded.empty() && std::memcmp(reencoded.data(), p, reencoded.size()) != 0))
    std::abort();
  return 0;
}

// libFuzzer target: the receive path of sealed frames after the handshake,
// as the transport runs it: bytes in arbitrary pieces into FrameDecoder
// (established phase), each decoded frame opened in place with its position
// in the stream as the nonce (open_frame, sealed_frame.h), and nothing after
// the first frame that fails to decode or open.
//
// Byte 0 picks the suite (AES-256-GCM or ChaCha20-Poly1305), the library of
// each end (OpenSSL or libsodium: the same bytes either way), the piece size,
// and the mode:
// - raw: the rest is the stream. No frame can open (forging a tag is not
//   feasible), and nothing may crash or read out of bounds.
// - sealed: the rest describes up to 8 frames (type, length, plaintext)
//   that an honest sender seals at positions 0, 1, ..., and then one attack
//   on the stream (flip a bit, cut it, drop, swap or replay a frame, or
//   none). The contract: what is delivered is a prefix of what was sent,
//   frame for frame; all of it when there was no attack; and a stream cut
//   inside a frame delivers only the frames wholly before the cut.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "dist/frame.h"
#include "dist/frame_cipher.h"
#include "dist/sealed_frame.h"
#include "fuzz_input.h"

using namespace intellect;

namespace {

// A fixed key: the target checks the framing and the AEAD's use, not key agreement.
AeadKey key() {
  AeadKey k{};
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(0xA5 ^ (i * 29));
  return k;
}

using Reader = FuzzInput;

// Decodes and opens `stream` the transport's way; returns the frames
// delivered before the first failure.
std::vector<Frame> receive(const FrameCipher& rx, const std::vector<uint8_t>& stream, size_t piece) {
  std::vector<Frame> delivered;
  FrameDecoder dec(FrameDecoder::Phase::established);
  uint64_t position = 0;
  size_t at = 0;
  while (at < stream.size()) {
    const size_t give = std::min(piece, stream.size() - at);
    const size_t k = dec.feed(stream.data() + at, give);
    if (k > give) std::abort();
    at += k;
    if (dec.failed()) break;
    if (dec.ready()) {
      Frame f = dec.take();
      const size_t sealed_size = f.payload.size();
      if (!open_frame(rx, position++, f).empty()) break;
      if (f.payload.size() + kAeadTagBytes != sealed_size) std::abort();
      delivered.push_back(std::move(f));
      continue;
    }
    if (k == 0) std::abort();  // neither progress, nor a frame, nor an error
  }
  return delivered;
}

bool same(const Frame& a, const Frame& b) { return a.type == b.type && a.payload == b.payload; }

enum class Attack : uint8_t { none, flip_bit, cut, drop, swap, replay, kCount };

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  const uint8_t mode = data[0];
  const CipherSuite suite = (mode & 1) ? CipherSuite::aes256_gcm : CipherSuite::chacha20_poly1305;
  if (suite == CipherSuite::aes256_gcm && !aes256gcm_available()) return 0;
  const AeadLibrary tx_lib = (mode & 2) ? AeadLibrary::libsodium : AeadLibrary::openssl;
  const AeadLibrary rx_lib = (mode & 4) ? AeadLibrary::libsodium : AeadLibrary::openssl;
  const bool structured = (mode & 8) != 0;
  const size_t piece = 1 + ((mode >> 4) * 13);  // 1..196: every split of a header, and whole frames
  const FrameCipher tx(suite, key(), tx_lib), rx(suite, key(), rx_lib);
  Reader in{data + 1, size - 1};

  if (!structured) {
    const std::vector<uint8_t> stream(in.p, in.p + in.n);
    if (!receive(rx, stream, piece).empty()) std::abort();  // a forged tag opened
    return 0;
  }

  // The honest sender's frames.
  static const FrameType kTypes[] = {FrameType::control, FrameType::data, FrameType::evidence};
  std::vector<Frame> sent;
  std::vector<size_t> starts;  // where each sealed frame begins in the stream
  std::vector<uint8_t> stream;
  const int count = 1 + in.byte() % 8;
  for (int i = 0; i < count; ++i) {
    Frame f;
    f.type = kTypes[in.byte() % 3];
    const size_t len = in.byte();  // 0..255
    for (size_t j = 0; j < len; ++j) f.payload.push_back(in.byte());
    starts.push_back(stream.size());
    const std::vector<uint8_t> bytes = sealed_frame_bytes(tx, static_cast<uint64_t>(i), f);
    stream.insert(stream.end(), bytes.begin(), bytes.end());
    sent.push_back(std::move(f));
  }
  starts.push_back(stream.size());
  auto frame_bytes = [&](size_t i) {
    return std::vector<uint8_t>(stream.begin() + starts[i], stream.begin() + starts[i + 1]);
  };

  // One attack.
  const auto attack = static_cast<Attack>(in.byte() % static_cast<uint8_t>(Attack::kCount));
  const size_t a = in.byte() % count, b = in.byte() % count;
  const size_t at = ((static_cast<size_t>(in.byte()) << 8) | in.byte()) % stream.size();
  std::vector<uint8_t> wire;
  size_t whole_before_cut = sent.size();
  switch (attack) {
    case Attack::none:
    case Attack::kCount:
      wire = stream;
      break;
    case Attack::flip_bit:
      wire = stream;
      wire[at] ^= static_cast<uint8_t>(1u << (in.byte() % 8));
      break;
    case Attack::cut:
      wire.assign(stream.begin(), stream.begin() + at);
      whole_before_cut = 0;
      while (whole_before_cut < sent.size() && starts[whole_before_cut + 1] <= at) ++whole_before_cut;
      break;
    case Attack::drop:
      for (size_t i = 0; i < sent.size(); ++i)
        if (i != a) {
          const auto f = frame_bytes(i);
          wire.insert(wire.end(), f.begin(), f.end());
        }
      break;
    case Attack::swap:
      for (size_t i = 0; i < sent.size(); ++i) {
        const auto f = frame_bytes(i == a ? b : i == b ? a : i);
        wire.insert(wire.end(), f.begin(), f.end());
      }
      break;
    case Attack::replay: {  // frame a again, after frame b
      for (size_t i = 0; i < sent.size(); ++i) {
        const auto f = frame_bytes(i);
        wire.insert(wire.end(), f.begin(), f.end());
        if (i == b) {
          const auto r = frame_bytes(a);
          wire.insert(wire.end(), r.begin(), r.end());
        }
      }
      break;
    }
  }

  const std::vector<Frame> got = receive(rx, wire, piece);
  if (got.size() > sent.size()) std::abort();  // a replay was accepted
  for (size_t i = 0; i < got.size(); ++i)
    if (!same(got[i], sent[i])) std::abort();  // something other than what was sent, at that position
  if (attack == Attack::none && got.size() != sent.size()) std::abort();
  if (attack == Attack::cut && got.size() != whole_before_cut) std::abort();
  // A replayed copy of the frame that belongs right there (a = b + 1) opens;
  // the original behind it then does not.
  if (attack == Attack::replay && got.size() > b + 1 + (a == b + 1 ? 1 : 0)) std::abort();
  if (attack == Attack::flip_bit) {
    size_t hit = 0;
    while (starts[hit + 1] <= at) ++hit;
    if (got.size() > hit) std::abort();  // the altered frame, or one after it, was delivered
  }
  if (attack == Attack::drop && got.size() > a) std::abort();
  if (attack == Attack::swap && a != b && got.size() > std::min(a, b)) std::abort();
  return 0;
}

// A frame sealed for the wire after the handshake, both ways: what the
// transport's sender writes (the header, which counts the tag; the payload
// encrypted in place; the tag after it) and what its receiver does with a
// frame FrameDecoder yields (open it in place with the frame's position in
// its direction as the nonce). One definition for the transport, its tests
// and the fuzz target of the receive path (fuzz/fuzz_sealed_frame.cpp).
//
// Thread-safety: free functions over a FrameCipher, which may be used from
// any thread (frame_cipher.h); the caller owns the frame and its position.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "dist/frame.h"
#include "dist/frame_cipher.h"

namespace intellect {

struct SealedFrame {
  FrameHeader header;  // the additional data the tag covers
  std::array<uint8_t, kAeadTagBytes> tag;
};

// The header of a frame of `type` whose plaintext is `plaintext_size` bytes,
// sealed; fails (naming the type and its limit) if that is too large.
SealedFrame sealed_frame_header(FrameType type, size_t plaintext_size);
// Encrypts `payload` in place as frame `position` of its direction; the tag
// goes to sealed.tag.
void seal_frame(const FrameCipher& tx, uint64_t position, std::vector<uint8_t>& payload, SealedFrame& sealed);
// Opens f (its payload: ciphertext, then the tag) in place as frame
// `position`: empty on success, else why the connection closes.
std::string open_frame(const FrameCipher& rx, uint64_t position, Frame& f);
// The bytes the transport writes for f sealed as frame `position`.
std::vector<uint8_t> sealed_frame_bytes(const FrameCipher& tx, uint64_t position, Frame f);

}  // namespace intellect

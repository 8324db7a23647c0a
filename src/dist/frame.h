// The mesh's wire unit: a fixed 12-byte header, then the payload.
//
//   offset 0  u32 magic             "INTL" (0x4c544e49 little-endian)
//   offset 4  u16 protocol version  kProtocolVersion
//   offset 6  u16 type              a FrameType
//   offset 8  u32 payload length    at most max_payload(type)
//
// All fields are little-endian. Each type has its own payload limit, checked
// on the header before a byte of payload is buffered, so a peer cannot make
// us allocate more than the type allows; before authentication only the
// handshake types (at most 256 bytes) are accepted. After it, each payload is
// sealed (frame_cipher.h) and may exceed its type's limit by the tag.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace intellect {

constexpr uint32_t kFrameMagic = 0x4c544e49;  // bytes 'I' 'N' 'T' 'L' on the wire
// 2: the keyed handshake (handshake.h) and encrypted frames (frame_cipher.h).
// 3: ring members carry their names and nodes report measured link rates
//    (ring order by rate); a state request names the end of its chunk range
//    (a joiner's lanes).
// 4: signed ring messages and accusations with evidence (ring_evidence.h):
//    the ring header's flags byte, RingFailed's evidence, the evidence frame.
// 5: signed sparse contributions (sparse_evidence.h): ring members carry
//    their node keys, sparse messages a flags byte and their lane, and a
//    sparse accusation names the chunks' author.
// 6: a round's result is applied only once the coordinator commits it
//    (RoundDone, RoundCommit): a round one member failed is redone by all.
// A node of another version is refused at the handshake, by name, rather
// than failing to decode.
constexpr uint16_t kProtocolVersion = 6;
// After the handshake every payload carries an AEAD tag of this many bytes
// beyond what its type allows (frame_cipher.h).
constexpr size_t kSealedFrameOverhead = 16;
constexpr size_t kFrameHeaderSize = 12;

enum class FrameType : uint16_t {
  // Handshake (auth.h): only these may arrive before the peer is authenticated.
  auth_challenge = 1,  // acceptor -> initiator: acceptor nonce
  auth_response = 2,   // initiator -> acceptor: initiator nonce + initiator proof
  auth_confirm = 3,    // acceptor -> initiator: acceptor proof
  // After authentication.
  control = 16,  // coordinator and membership messages
  data = 17,     // bulk tensors (ring all-reduce chunks)
  // A control message too large for a control frame: only a RingFailed with
  // its evidence (ring_evidence.h), node -> coordinator.
  evidence = 18,
};

struct FrameTypeInfo {
  FrameType type;
  const char* name;
  uint32_t max_payload;
  bool handshake;  // allowed before authentication (and only then)
};

// The type's entry, or nullptr for a value we do not know.
const FrameTypeInfo* frame_type_info(uint16_t type);
const char* frame_type_name(FrameType type);  // "unknown" for values not in the table

struct Frame {
  FrameType type = FrameType::control;
  std::vector<uint8_t> payload;
};

using FrameHeader = std::array<uint8_t, kFrameHeaderSize>;

// Fails (Error) if the payload exceeds the type's limit (plus `sealed`
// bytes of AEAD tag): we never send what the peer would refuse.
FrameHeader encode_frame_header(FrameType type, size_t payload_size, size_t sealed = 0);
std::vector<uint8_t> encode_frame(const Frame& frame);  // header + payload in one buffer

enum class DecodeError : uint8_t {
  none,
  bad_magic,            // not an intellect peer, or the stream lost sync
  unsupported_version,  // an intellect peer of another protocol version
  unknown_type,
  type_not_allowed,  // a handshake type after authentication or the reverse
  oversize,          // payload length above the type's limit
};
const char* decode_error_name(DecodeError e);

// Incremental decoder for one TCP stream. Feed it whatever the socket
// delivered; it consumes bytes up to the end of the next complete frame, so
// the caller can act on each frame (e.g. finish the handshake and switch
// phase) before the bytes behind it are interpreted. Once it reports an error
// the stream is unusable (frame boundaries are lost) and it consumes nothing.
class FrameDecoder {
 public:
  enum class Phase { handshake, established };
  explicit FrameDecoder(Phase phase = Phase::established) : phase_(phase) {}

  // Returns how many of the n bytes were consumed: all of them, or fewer when
  // a frame completed (ready()) or the stream turned out invalid (failed()).
  // Must not be called while ready(): take() the frame first.
  size_t feed(const uint8_t* data, size_t n);

  bool ready() const { return ready_; }
  Frame take();  // the completed frame; ready() is false afterwards

  bool failed() const { return error_ != DecodeError::none; }
  DecodeError error() const { return error_; }
  const std::string& error_message() const { return message_; }

  // True while part of a frame has arrived and the rest has not: the span in
  // which a stalled peer is detected.
  bool mid_frame() const { return !ready_ && (header_have_ > 0); }
  void set_phase(Phase p) { phase_ = p; }
  Phase phase() const { return phase_; }

 private:
  bool check_header();
  Phase phase_;
  FrameHeader header_{};
  size_t header_have_ = 0;  // bytes of header_ filled; == kFrameHeaderSize once parsed
  size_t payload_len_ = 0;  // the parsed header's payload length
  Frame frame_;
  bool ready_ = false;
  DecodeError error_ = DecodeError::none;
  std::string message_;
};

}  // namespace intellect

// What a dense round's lane does the same whichever pattern averages it (a
// ring, ring_allreduce.h, or the direct pattern, direct_allreduce.h): its
// arguments' checks, a round of one, its messages' buffers, the chunks it
// keeps for joiners, its first failure and the accusation that failure
// becomes.
//
// Thread-free functions, and two small classes owned by one lane call:
// CarriedChunks is written by its codec threads, each chunk once;
// LaneFailure is recorded by any of its threads.
#pragma once
#include <cstddef>
#include <cstdint>
#include <exception>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "dist/codec.h"
#include "dist/ring_allreduce.h"
#include "dist/ring_queue.h"
#include "dist/round_codec.h"

namespace intellect {

// Why a dense round cannot run with these arguments ("" when it can).
std::string round_argument_error(const RingOptions& opt, std::span<const float> input, std::span<float> output,
                                 bool carried);
// A round of one: output = input (unquantized), or why not (a non-finite
// value; "" when fine).
std::string average_alone(std::span<const float> input, std::span<float> output);

// A fresh message for header `h`: a recycled buffer (message_buffers.h) of
// the header, its payload's bytes and, when h is signed, a signature's; the
// header written, the rest for the caller.
std::vector<uint8_t> new_ring_message(const RingHeader& h);

// This rank's commitment leaf message for its lane (opt.audit->own, signed
// in node-key runs): the first message of an audited lane to each peer.
std::vector<uint8_t> own_leaf_message(const RingOptions& opt, size_t lane_elems);

// Fails naming the first NaN/inf of input[off, off + n): our own must never
// leave this rank. Returns when there is none (a sum of finite values
// overflowed: the caller says so).
void refuse_non_finite_input(std::span<const float> input, size_t off, size_t n);

// Where a lane's carried chunks go (a donor keeps the round for joiners):
// chunk i of the lane, in offset order (ring_chunk_counts), into piece
// opt.carried_first_piece + i of a planned round, in place; or as a
// RingCarried copy into `carried`; or nowhere (fp32 rounds are assembled
// after the ring, from the output). Refuses a plan cut otherwise than the lane.
class CarriedChunks {
 public:
  CarriedChunks(const RingOptions& opt, const BlockCodec& codec, size_t lane_elems, std::vector<RingCarried>* carried,
                const char* lane_kind);
  void keep(size_t index, const uint8_t* payload);

 private:
  const RingOptions& opt_;
  const BlockCodec& codec_;
  std::vector<RingCarried>* carried_;
  PlannedRound* into_;
  std::vector<size_t> counts_, offsets_;  // per chunk of the lane, in offset order
};

// A lane's first failure (a neighbour's abort makes the other threads' calls
// fail too, and those later errors would hide the cause), with the offender
// and its evidence when a contribution check named one.
class LaneFailure {
 public:
  void record(std::exception_ptr e);
  bool failed(std::string& msg) { return first_.get(msg); }
  // Once the lane's threads are joined.
  int offender() const { return offender_; }
  std::vector<std::vector<uint8_t>> take_evidence() { return std::move(evidence_); }

 private:
  FirstError first_;
  std::mutex mu_;
  int offender_ = -1;
  std::vector<std::vector<uint8_t>> evidence_;
};

// An accuser hands over only what the coordinator will find holds: the
// evidence is checked with the accused's key (null: unknown) and the same
// judgement (accused_rank -1: the ring predecessor), and cleared when it
// does not hold (a sender that signed badly, an excess spread over more
// messages than were kept), so the accusation goes without it, which in a
// node-key run refuses nobody. Returns a note for the error message.
std::string keep_provable(const RingOptions& opt, int accused_rank, const PublicKey* accused_key,
                          std::vector<std::vector<uint8_t>>& evidence);

// Throws what a failed lane ends in: ContributionExceedsAnnouncement naming
// the offender (its evidence through keep_provable when `check_evidence`,
// as it is otherwise), or an Error. `ctx` names the round.
[[noreturn]] void throw_lane_failure(const std::string& ctx, LaneFailure& failure, const RingOptions& opt,
                                     int accused_rank, const PublicKey* accused_key, bool check_evidence);

}  // namespace intellect

// How a node's wait on the mesh ends when it does not give what was asked
// for, shared by the mesh's parts (coordinator client, ring round, state
// client), MeshNode and its callers.
//
// Late and rewound are values: each is an ordinary turn of a run across
// unreliable machines, which the caller answers with its next step
// (OuterSync: a round from a donor, or the run's state). Eviction and a stop
// end the node: inside the mesh they are exceptions, and MeshNode hands an
// eviction to its callers as a value too (Evicted); OuterSync then throws
// EvictedFromRun to end the process (intellect_train exits 75).
#pragma once
#include <cstdint>
#include <string>

#include "util/error.h"

namespace intellect {

// The ring of this outer step formed without this node (it was still
// joining, too slow, or left out): take the round's average from a donor.
struct LateForRing {
  int64_t outer_step;
};

// Every node holding the run's newest outer step is gone: the run goes on
// from `outer_step`, the newest a live node holds (control::Rewound). A node
// holding it goes on from its own state; any other takes it from a donor.
struct RewoundTo {
  int64_t outer_step;
};

// The coordinator no longer counts this node (it was silent past the
// timeout, e.g. stopped, and was evicted): end, and start again to rejoin.
struct Evicted {
  std::string reason;
};

// A one-line account of each, for logs and errors.
inline std::string describe(const LateForRing& l) {
  return str("the ring of outer step ", l.outer_step, " formed without this node (late)");
}
inline std::string describe(const RewoundTo& r) { return str("the run went back to outer step ", r.outer_step); }
inline std::string describe(const Evicted& e) { return str("evicted from the run: ", e.reason); }

// The process was asked to stop (SIGTERM, Ctrl-C, MeshNode::cancel) while it
// waited on the mesh: not a failure of the run.
struct StoppedOnRequest : Error {
  using Error::Error;
};

// Thrown by the mesh's parts when the coordinator no longer takes this node,
// and by OuterSync to end the process.
struct EvictedFromRun : Error {
  using Error::Error;
};

}  // namespace intellect

// What ends a node's wait on the mesh other than an ordinary failure (Error).
// Inside the mesh's parts (coordinator client, ring round, state client) a
// wait ends with these; MeshNode hands late, rewound and evicted to its
// callers as values (LateForRing, RewoundTo, Evicted in mesh_node.h).
// StoppedOnRequest crosses it as an exception, and EvictedFromRun is what
// OuterSync throws to end the process (intellect_train exits 75).
#pragma once
#include <cstdint>
#include <string>

#include "util/error.h"

namespace intellect {

// The process was asked to stop (SIGTERM, Ctrl-C, MeshNode::cancel) while it
// waited on the mesh: not a failure of the run.
struct StoppedOnRequest : Error {
  using Error::Error;
};

// The coordinator formed this outer step's ring without this node (it was
// still joining, or too slow): take the round's average from a donor.
struct LateForRound : Error {
  LateForRound(int64_t step, const std::string& what) : Error(what), outer_step(step) {}
  int64_t outer_step;
};

// The coordinator no longer counts this node as a member (it was silent past
// the timeout, e.g. stopped, and was evicted): the process should end and be
// started again, which joins the run afresh and fetches the state.
struct EvictedFromRun : Error {
  using Error::Error;
};

// Every node holding the run's newest outer step is gone: the run goes on
// from `outer_step`, the newest a live node holds (control::Rewound). A node
// holding it goes on from its own state; any other takes it from a donor.
struct RunRewound : Error {
  RunRewound(int64_t step, const std::string& what) : Error(what), outer_step(step) {}
  int64_t outer_step;
};

}  // namespace intellect

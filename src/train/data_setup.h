// From the run's config to loader options: which shards each dataset is,
// which partition this node reads, and what the model needs checked.
#pragma once
#include "data/dataloader.h"
#include "train/config.h"

namespace intellect {

// Training batches: micro_batch_size rows, this node's data partition, the
// mixture seeded by data.seed.
LoaderOptions train_loader_options(const Config& cfg);

// Validation batches: every node reads the same fixed batches from the start
// of data.val (partition 0 of 1, a fixed mixture seed), so val_loss is
// comparable between evaluations, nodes and runs. Fails when there is no val.
LoaderOptions val_loader_options(const Config& cfg);

}  // namespace intellect

# Sourced by the quality scripts (scripts/compression_quality_gpu.sh, the
# overlap-quality section of scripts/device/routine.sh): which token shards a
# quality run trains and validates on. DATA names a directory of Llama 3 token
# shards (default data/shakespeare), in one of two layouts:
#   DIR/shard_000000.bin (train) + DIR/shard_000001.bin (validation)   data/shakespeare
#   DIR/train/shard_*.bin + DIR/val/shard_*.bin                       data/english
#                                                                     (scripts/prepare_english_corpus.sh)
# When DIR is missing but DIR.tgz is there (what the GPU machine is given,
# since the shards exceed the carry limit), it is unpacked next to it first.
# Sets QUALITY_TRAIN and QUALITY_VAL (shard paths or globs for data.train and
# data.val), or ends the calling script with what is missing.
QUALITY_DATA="${DATA:-data/shakespeare}"
QUALITY_DATA="${QUALITY_DATA%/}"
if [[ ! -d "$QUALITY_DATA" && -f "$QUALITY_DATA.tgz" ]]; then
  echo "quality data: unpacking $QUALITY_DATA.tgz" >&2
  tar xzf "$QUALITY_DATA.tgz" -C "$(dirname "$QUALITY_DATA")" \
    || { echo "quality data: could not unpack $QUALITY_DATA.tgz (damaged? make it again with scripts/prepare_english_corpus.sh)" >&2; exit 1; }
fi
if [[ -f "$QUALITY_DATA/train/shard_000000.bin" && -f "$QUALITY_DATA/val/shard_000000.bin" ]]; then
  QUALITY_TRAIN="$QUALITY_DATA/train/shard_*.bin"
  QUALITY_VAL="$QUALITY_DATA/val/shard_*.bin"
elif [[ -f "$QUALITY_DATA/shard_000000.bin" && -f "$QUALITY_DATA/shard_000001.bin" ]]; then
  QUALITY_TRAIN="$QUALITY_DATA/shard_000000.bin"
  QUALITY_VAL="$QUALITY_DATA/shard_000001.bin"
else
  echo "quality data: no token shards in $QUALITY_DATA (nor $QUALITY_DATA.tgz): carry the data directory" \
       "(or its .tgz) to this machine, or set DATA; see scripts/compression_quality_gpu.sh's header" >&2
  exit 1
fi
echo "quality data: train $QUALITY_TRAIN, validation $QUALITY_VAL" >&2

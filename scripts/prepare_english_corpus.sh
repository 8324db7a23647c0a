#!/usr/bin/env bash
# An English corpus large enough for the quality runs of issues 15 and 18
# (1200 inner steps of 4 nodes × 8 × 256 tokens = 9.8M tokens, none read
# twice), made from Debian packages of public text, since the GPU machine has
# no network and ../shared/data holds only tinyshakespeare (0.3M tokens).
#
#   scripts/prepare_english_corpus.sh [--debs DIR] [--force] [OUT_DIR]     (default data/english)
#
# What it does (on this machine, which can reach the Debian mirror):
#   1. `apt-get download` the packages below into a temporary directory (or
#      takes the .deb files from --debs DIR) and extracts each with dpkg-deb -x;
#   2. tools/english_corpus_text.py turns them into plain-text documents (markup
#      stripped), orders them by a seeded hash and splits off 2% of the
#      characters as validation (text/train.jsonl, text/val.jsonl);
#   3. build/prepare_data tokenizes each split with the Llama 3 tokenizer into
#      OUT_DIR/train/shard_000000.bin and OUT_DIR/val/shard_000000.bin (+ manifests);
#   4. packs the two shard directories into OUT_DIR.tgz (what the GPU machine
#      is given: `carry` data/english.tgz; the quality scripts unpack it there),
#      and prints sizes and sha256 sums.
# Everything is written under a temporary name and renamed at the end, so an
# interrupted run leaves no OUT_DIR and no OUT_DIR.tgz behind.
#
# The corpus (docs/PERFORMANCE.md, "An English corpus for the quality runs"):
# a 1913 dictionary (GCIDE, ~half the text), Spurgeon's Treasury of David,
# Matthew Henry's and Scofield's Bible commentaries, the King James Bible,
# FOLDOC, the Jargon File, Bierce's Devil's Dictionary and the fortune
# cookies: about 61M characters, 16.0M training and 0.33M validation tokens.
# Dated, dictionary-heavy English, not web text: good for comparing training
# settings against each other, not for comparing with published losses.
#
# Settings (environment): PREPARE_DATA (default build/prepare_data),
# TOKENIZER (default ../shared/data/llama3/tokenizer.json), SEED (20261203),
# VAL_FRACTION (0.02).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# Package names; the versions these figures were made from are in docs/PERFORMANCE.md
# (Debian 12 bookworm). Another version gives another corpus: the sha256 sums will differ.
packages=(dict-gcide dict-foldoc dict-devil jargon-text fortunes
          sword-comm-tdavid sword-comm-mhcc sword-comm-scofield sword-text-kjv)

debs=""
force=0
out=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --debs) debs="$2"; shift 2 ;;
    --force) force=1; shift ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    -*) echo "prepare_english_corpus: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { echo "prepare_english_corpus: one OUT_DIR only (got '$out' and '$1')" >&2; exit 2; }
       out="$1"; shift ;;
  esac
done
out="${out:-data/english}"
out="${out%/}"
prepare="${PREPARE_DATA:-build/prepare_data}"
tokenizer="${TOKENIZER:-../shared/data/llama3/tokenizer.json}"
fail() { echo "prepare_english_corpus: $*" >&2; exit 1; }

[[ -x "$prepare" ]] || fail "$prepare not found: build it first (cmake --build build --target prepare_data) or set PREPARE_DATA"
[[ -e "$tokenizer" ]] || fail "tokenizer $tokenizer not found: set TOKENIZER to the Llama 3 tokenizer.json"
command -v dpkg-deb >/dev/null || fail "dpkg-deb not found: this script needs a Debian-based machine (or extract the packages yourself)"
command -v python3 >/dev/null || fail "python3 not found"
if [[ -e "$out" || -e "$out.tgz" ]] && [[ $force == 0 ]]; then
  fail "$out or $out.tgz already exists: remove them or pass --force"
fi
prepare=$(realpath "$prepare")
tokenizer_abs=$(realpath "$tokenizer")

work=$(mktemp -d "${TMPDIR:-/tmp}/english-corpus.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/pk"

# 1. The packages.
if [[ -n "$debs" ]]; then
  for p in "${packages[@]}"; do
    found=("$debs"/"${p}"_*.deb)
    [[ -f "${found[0]}" ]] || fail "no ${p}_*.deb in $debs: download it (apt-get download $p) or leave out --debs"
    cp "${found[0]}" "$work/debs/"
  done
else
  command -v apt-get >/dev/null || fail "apt-get not found: pass --debs DIR with the .deb files of: ${packages[*]}"
  chmod 755 "$work" "$work/debs"  # apt's sandbox user must be able to write there
  if ! (cd "$work/debs" && apt-get download "${packages[@]}" > "$work/apt.log" 2>&1); then
    grep -E "^E:" "$work/apt.log" >&2 || tail -5 "$work/apt.log" >&2
    fail "apt-get download failed (above). Run 'apt-get update', check that the sources list has Debian's main" \
         "component (bookworm), or fetch the .deb files elsewhere and pass --debs DIR"
  fi
fi
echo "prepare_english_corpus: packages"
# Each package's copyright file travels with the corpus (copyright/PACKAGE): the licences are theirs.
printf "%s\t%s\t%s\n" package version deb_sha256 > "$work/packages.tsv"
mkdir -p "$work/copyright"
for f in "$work"/debs/*.deb; do
  p=$(dpkg-deb -f "$f" Package)
  v=$(dpkg-deb -f "$f" Version)
  dpkg-deb -x "$f" "$work/pk/$p" || fail "dpkg-deb -x $f failed: the download may be damaged; run again"
  cp "$work/pk/$p/usr/share/doc/$p/copyright" "$work/copyright/$p" \
    || fail "$p has no usr/share/doc/$p/copyright: not the package this script expects"
  printf "%s\t%s\t%s\n" "$p" "$v" "$(sha256sum "$f" | cut -d' ' -f1)" >> "$work/packages.tsv"
done
column -t -s $'\t' "$work/packages.tsv" | sed 's/^/  /'

# 2. Plain-text documents, shuffled and split.
python3 tools/english_corpus_text.py --extracted "$work/pk" --out "$work/text" \
  --seed "${SEED:-20261203}" --val-fraction "${VAL_FRACTION:-0.02}"

# 3. Llama 3 token shards. prepare_data runs inside $work with relative paths so
#    the manifests it writes do not name this run's temporary directory.
name=$(basename "$out")
stage="$work/$name"
mkdir -p "$stage"
for split in val train; do
  (cd "$work" && "$prepare" --tokenizer "$tokenizer_abs" --input "text/$split.jsonl" \
     --output "$name/$split" 2>&1 | grep -v "% of input") || fail "prepare_data failed on the $split split (above)"
done
cp -r "$work/packages.tsv" "$work/text/sources.tsv" "$work/copyright" "$stage/"

# 4. The archive for the GPU machine (deterministic: sorted names, fixed times and owners).
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work" -cf - "$name" | gzip -n -6 > "$work/$name.tgz"
mkdir -p "$stage/text"
mv "$work/text/train.jsonl" "$work/text/val.jsonl" "$stage/text/"

mkdir -p "$(dirname "$out")"
rm -rf "$out" "$out.tgz"
mv "$work/$name.tgz" "$out.tgz.tmp.$$"
mv "$stage" "$out"
mv "$out.tgz.tmp.$$" "$out.tgz"

echo "prepare_english_corpus: wrote $out and $out.tgz"
for f in "$out"/train/shard_*.bin "$out"/val/shard_*.bin "$out"/text/*.jsonl "$out.tgz"; do
  printf "  %-40s %10d bytes  sha256 %s\n" "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)"
done
python3 - "$out" <<'PY'
import json, sys
for split in ("train", "val"):
    m = json.load(open(f"{sys.argv[1]}/{split}/manifest.json"))
    print(f"  {split}: {m['documents']} documents, {m['tokens']} tokens")
PY
echo "  on the GPU machine: carry $out.tgz; the quality scripts unpack it (tar xzf $out.tgz -C $(dirname "$out"))"

#!/usr/bin/env python3
"""Measures HuggingFace `tokenizers` and `tiktoken` on the text that
tools/bench_tokenizer.cpp measures intellect on, split the same way, so the
MB/s figures compare. Dev-only: pip install tokenizers tiktoken.

    python3 tools/bench_tokenizer_hf.py FILE [--threads N] [--repeat R]
        [--tokenizer-json PATH] [--tiktoken-model PATH]

The text is cut into documents after every blank line ("\\n\\n"), as the C++
bench does; each library encodes the documents with N threads (HF through
RAYON_NUM_THREADS and encode_batch, tiktoken through encode_ordinary_batch's
thread pool), without BOS. The best of R runs is reported.
"""
import argparse
import os
import re
import sys
import time

DEFAULT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data", "llama3")


def split_documents(text):
    return [d for d in re.split(r"(?<=\n\n)", text) if d]


def best_of(repeat, fn):
    best, result = None, None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best, result


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tokenizer-json", default=os.path.join(DEFAULT_DIR, "tokenizer.json"))
    p.add_argument("--tiktoken-model", default=os.path.join(DEFAULT_DIR, "tokenizer.model"))
    args = p.parse_args()
    # Rayon reads this when its pool starts, which is after import.
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    from tokenizers import Tokenizer

    with open(args.file, "rb") as f:
        raw = f.read()
    text = raw.decode("utf-8")
    docs = split_documents(text)
    mb = len(raw) / 1e6
    print(f"{args.file}: {len(raw)} bytes, {len(docs)} documents, {args.threads} threads")

    hf = Tokenizer.from_file(args.tokenizer_json)
    secs, enc = best_of(args.repeat, lambda: hf.encode_batch(docs, add_special_tokens=False))
    tokens = sum(len(e.ids) for e in enc)
    print(f"hf tokenizers {hf_version()}: {mb / secs:.2f} MB/s  {tokens / secs / 1e6:.2f} Mtok/s  ({tokens} tokens, {secs:.3f} s)")

    pattern = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
               r"|\s*[\r\n]+|\s+(?!\S)|\s+")
    ranks = load_tiktoken_bpe(args.tiktoken_model)
    tt = tiktoken.Encoding(name="llama3", pat_str=pattern, mergeable_ranks=ranks, special_tokens={})
    if args.threads == 1:
        fn = lambda: [tt.encode_ordinary(d) for d in docs]
    else:
        fn = lambda: tt.encode_ordinary_batch(docs, num_threads=args.threads)
    secs, enc = best_of(args.repeat, fn)
    tokens = sum(len(e) for e in enc)
    print(f"tiktoken {tiktoken.__version__}: {mb / secs:.2f} MB/s  {tokens / secs / 1e6:.2f} Mtok/s  ({tokens} tokens, {secs:.3f} s)")


def hf_version():
    import tokenizers
    return tokenizers.__version__


if __name__ == "__main__":
    sys.exit(main())

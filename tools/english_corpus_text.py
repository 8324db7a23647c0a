#!/usr/bin/env python3
"""english_corpus_text: turns Debian packages of English text into plain-text
documents for prepare_data (scripts/prepare_english_corpus.sh drives it).

Input: a directory holding one subdirectory per package, each the package
extracted with `dpkg-deb -x` and named after the package (dict-gcide, ...).
Output, in the output directory: train.jsonl and val.jsonl (one JSON object
per line, the document in "text", the form prepare_data reads) and
sources.tsv (documents and characters per package and split).

Why the documents look as they do:
- A document is a run of consecutive units of one source (dictionary entries,
  commentary paragraphs, fortunes) of about --doc-chars characters, so that
  the shuffle mixes sources at a grain finer than a book but each document
  still reads as a page of one text.
- Markup is stripped: dictd source tags ("[1913 Webster]"), pronunciation
  keys (\\Af*fect"\\), cross-reference braces, SWORD's OSIS tags and notes.
- Documents are ordered by the SHA-256 of (seed, source, index), so the order
  depends on the seed alone, not on Python's random module; the first
  --val-fraction of the characters in that order are validation, the rest
  training: both splits are samples of the same mix.
- Documents whose text is an exact repeat of an earlier one are dropped, so
  no validation document also appears in training.
"""
import argparse
import gzip
import hashlib
import html
import json
import os
import re
import struct
import sys
import textwrap
import unicodedata
import zlib

# --------------------------------------------------------------- dictd files

B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64num(s):
    n = 0
    for ch in s:
        n = n * 64 + B64.index(ch)
    return n


def dictd_entries(base):
    """The entries of a dictd database (base.index + base.dict.dz), in file
    order, each once (several headwords can point at one entry)."""
    spans = set()
    with open(base + ".index", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
                continue
            spans.add((b64num(parts[1]), b64num(parts[2])))
    data = gzip.open(base + ".dict.dz").read()
    for off, length in sorted(spans):
        yield data[off:off + length].decode("utf-8", errors="replace")


# GCIDE's source tags, which close every sense: [1913 Webster], [WordNet 1.5 +PJC], ...; the
# dictd conversion sometimes leaves the next entry's headword after the last one.
GCIDE_SOURCE = (r"\[\+?(?:(?:1913 Webster|Webster 1913 Suppl\.|WordNet (?:1\.[56]|sense \d)|PJC\.?|AS"
                r"|Century Dict\. 1906)[ +]*)+\]")
GCIDE_TAG_AT_END = re.compile(r"[ \t]*" + GCIDE_SOURCE + r"(?:[ \t]+[^\s\[]+)?[ \t]*$", re.M)
GCIDE_TAG = re.compile(r"[ \t]*" + GCIDE_SOURCE)
# The headword's pronunciation: \Af*fect"\ or (d[-e]*zert"), marked by syllable stars and accents.
PRONUNCIATION = re.compile(r"\s*\\[^\\\n]{1,80}\\|\s\((?=[^()\n]*[*\"`])[^()\n]{1,60}\)")
# GCIDE's ASCII codes for letters with diacritics and a few symbols.
GCIDE_LETTERS = {"ae": "\u00e6", "oe": "\u0153", "aum": "\u00e4", "imac": "\u012b", "eth": "\u00f0",
                 "thorn": "\u00fe", "root": "\u221a", "deg": "\u00b0", "sect": "\u00a7", "ng": "\u014b",
                 "th": "\u03b8", "yogh": "\u021d", "alpha": "\u03b1", "beta": "\u03b2", "oo^": "o\u030co",
                 "=oo": "o\u0304o", "=ae": "\u01e3", "add": "", "asl": "", "udd": "\u1e73", "dsdot": "\u1e0d"}
GCIDE_MARKS = {"^": "\u0306", "=": "\u0304", "-": "\u0304", "'": "\u0301", "`": "\u0300", ".": "\u0307",
               "~": "\u0303", "\"": "\u0308"}
GCIDE_CODE = re.compile(r"\[([a-z^=.~\"`'-]{2,5})\]")


def gcide_letter(m):
    code = m.group(1)
    if code in GCIDE_LETTERS:
        return GCIDE_LETTERS[code]
    if len(code) == 2 and code[1] in GCIDE_MARKS and code[0].isalpha():
        return unicodedata.normalize("NFC", code[0] + GCIDE_MARKS[code[1]])
    if len(code) == 2 and code[0] in GCIDE_MARKS and code[1].isalpha():
        return unicodedata.normalize("NFC", code[1] + GCIDE_MARKS[code[0]])
    return m.group(0)


INNER_SPACES = re.compile(r"(?<=\S) {3,}")


def tidy_entry(text):
    """Dedents an entry, keeps its line breaks (poems, quotations), caps
    indentation at 4 spaces, squeezes runs of spaces inside a line and blank
    lines to one."""
    text = textwrap.dedent(text.replace("\t", "    "))
    out, blank = [], False
    for line in text.split("\n"):
        line = line.rstrip()
        if not line:
            blank = True
            continue
        indent = len(line) - len(line.lstrip(" "))
        line = " " * min(indent, 4) + INNER_SPACES.sub(" ", line.lstrip(" "))
        if blank and out:
            out.append("")
        out.append(line)
        blank = False
    return "\n".join(out)


def gcide_units(root):
    entries = list(dictd_entries(os.path.join(root, "usr/share/dictd/gcide")))
    for i, e in enumerate(entries):
        # The conversion to dictd sometimes leaves the next entry's headword at the end of this one.
        nxt = entries[i + 1].split(None, 1)[0] if i + 1 < len(entries) and entries[i + 1].strip() else None
        e = e.rstrip()
        if nxt and e.endswith(" " + nxt):
            e = e[:-len(nxt)]
        first, _, rest = e.partition("\n")
        e = PRONUNCIATION.sub("", first) + "\n" + rest
        e = GCIDE_TAG.sub("", GCIDE_TAG_AT_END.sub("", e))
        e = GCIDE_CODE.sub(gcide_letter, e)
        e = e.replace("{", "").replace("}", "")
        e = tidy_entry(e)
        if len(e) > 40:
            yield e


def dictd_units(name):
    def units(root):
        for e in dictd_entries(os.path.join(root, "usr/share/dictd", name)):
            e = tidy_entry(e.replace("{", "").replace("}", ""))
            if len(e) > 40:
                yield e
    return units


def jargon_units(root):
    text = gzip.open(os.path.join(root, "usr/share/doc/jargon-text/jargon.txt.gz")).read().decode("utf-8")
    # The glossary proper: entries start with ":headword:" lines; the front
    # matter (table of contents) and appendices are skipped.
    start = text.find("\n   :")
    entries = re.split(r"\n(?=   :[^\n]+:)", text[start:])
    for e in entries:
        e = tidy_entry(e.replace("{", "").replace("}", ""))
        if len(e) > 40:
            yield e


def fortune_units(root):
    d = os.path.join(root, "usr/share/games/fortunes")
    for name in sorted(os.listdir(d)):
        path = os.path.join(d, name)
        # Left out: ascii-art (pictures, not text) and songs-poems (whole song lyrics, most still in copyright).
        if "." in name or name in ("ascii-art", "songs-poems") or os.path.islink(path) or not os.path.isfile(path):
            continue
        text = open(path, encoding="utf-8", errors="replace").read()
        for f in text.split("\n%\n"):
            f = tidy_entry(f.strip("%\n"))
            if len(f) > 20:
                yield f

# --------------------------------------------------------------- SWORD modules

NOTE = re.compile(r"<note\b.*?</note>", re.S)
PARA_BREAK = re.compile(r"<(?:div[^>]*\bsID=\"[^\"]*\"[^>]*type=\"(?:x-p|paragraph|introduction|section)\""
                        r"|div[^>]*type=\"(?:x-p|paragraph|introduction|section)\"[^>]*\bsID=\"[^\"]*\""
                        r"|chapter\b|lb\b|p\b|/p|title\b|/title|row\b)[^>]*>")
TAG = re.compile(r"<[^>]*>")
SPACES = re.compile(r"[ \t\r\n\u00a0]+")


def sword_blocks(moddir):
    """Decompressed blocks of a zText / zCom module (ot and nt), in order.
    Each block is a book or a chapter of the module's OSIS markup; the .?zs
    file lists (offset, compressed size, size) of each block as 3 × u32 LE."""
    names = sorted(os.listdir(moddir))
    for testament in ("ot", "nt"):
        for idx_name in [n for n in names if n.startswith(testament + ".") and n.endswith("zs")]:
            idx = open(os.path.join(moddir, idx_name), "rb").read()
            data = open(os.path.join(moddir, idx_name[:-1] + "z"), "rb").read()
            for i in range(0, len(idx) - 11, 12):
                off, size, _ = struct.unpack("<III", idx[i:i + 12])
                if size:
                    yield zlib.decompress(data[off:off + size]).decode("utf-8", errors="replace")


def sword_units(root):
    mods = os.path.join(root, "usr/share/sword/modules")
    for dirpath, _, files in sorted(os.walk(mods)):
        if not any(f.endswith("zs") for f in files):
            continue
        for block in sword_blocks(dirpath):
            block = NOTE.sub("", block)
            block = PARA_BREAK.sub("\n\n", block)
            block = html.unescape(TAG.sub("", block))
            for para in block.split("\n\n"):
                para = SPACES.sub(" ", para).strip()
                if para:
                    yield para

# --------------------------------------------------------------- assembly

SOURCES = {
    "dict-gcide": gcide_units,
    "dict-foldoc": dictd_units("foldoc"),
    "dict-devil": dictd_units("devil"),
    "jargon-text": jargon_units,
    "fortunes": fortune_units,
    "sword-comm-tdavid": sword_units,
    "sword-comm-mhcc": sword_units,
    "sword-comm-scofield": sword_units,
    "sword-text-kjv": sword_units,
}


def documents(units, doc_chars):
    """Packs consecutive units into documents of about doc_chars characters;
    a unit longer than that is a document of its own."""
    doc, size = [], 0
    for u in units:
        if doc and size + len(u) > doc_chars:
            yield "\n\n".join(doc)
            doc, size = [], 0
        doc.append(u)
        size += len(u) + 2
    if doc:
        yield "\n\n".join(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--extracted", required=True, help="directory of extracted packages, one subdirectory each")
    ap.add_argument("--out", required=True, help="output directory (train.jsonl, val.jsonl, sources.tsv)")
    ap.add_argument("--seed", type=int, default=20261203)
    ap.add_argument("--val-fraction", type=float, default=0.02)
    ap.add_argument("--doc-chars", type=int, default=4000)
    a = ap.parse_args()

    docs, seen, stats = [], set(), {}
    for source, units in SOURCES.items():
        root = os.path.join(a.extracted, source)
        if not os.path.isdir(root):
            sys.exit(f"english_corpus_text: {root} is missing: extract the package {source} there "
                     f"(dpkg-deb -x {source}_*.deb {root})")
        n = chars = dups = 0
        for i, text in enumerate(documents(units(root), a.doc_chars)):
            digest = hashlib.sha256(text.encode()).digest()
            if digest in seen:
                dups += 1
                continue
            seen.add(digest)
            key = hashlib.sha256(f"{a.seed}\0{source}\0{i}".encode()).digest()
            docs.append((key, source, text))
            n += 1
            chars += len(text)
        if n == 0:
            sys.exit(f"english_corpus_text: no text found for {source} under {root}: "
                     f"the package's layout changed; look at its files and update this tool")
        stats[source] = [n, chars, dups]
        print(f"  {source}: {n} documents, {chars / 1e6:.2f} M characters ({dups} repeats dropped)",
              file=sys.stderr)
    docs.sort()
    total = sum(len(t) for _, _, t in docs)
    val_chars, split = 0, {}
    os.makedirs(a.out, exist_ok=True)
    tmp = {name: os.path.join(a.out, f"{name}.jsonl.tmp.{os.getpid()}") for name in ("train", "val")}
    files = {name: open(path, "w", encoding="utf-8") for name, path in tmp.items()}
    for _, source, text in docs:
        name = "val" if val_chars < a.val_fraction * total else "train"
        if name == "val":
            val_chars += len(text)
        files[name].write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
        s = split.setdefault((source, name), [0, 0])
        s[0] += 1
        s[1] += len(text)
    for f in files.values():
        f.close()
    with open(os.path.join(a.out, "sources.tsv.tmp"), "w") as f:
        f.write("source\tsplit\tdocuments\tcharacters\n")
        for (source, name), (n, chars) in sorted(split.items()):
            f.write(f"{source}\t{name}\t{n}\t{chars}\n")
    for name, path in tmp.items():
        os.replace(path, os.path.join(a.out, f"{name}.jsonl"))
    os.replace(os.path.join(a.out, "sources.tsv.tmp"), os.path.join(a.out, "sources.tsv"))
    print(f"english_corpus_text: {len(docs)} documents, {total / 1e6:.2f} M characters, "
          f"{val_chars / 1e6:.2f} M of them validation", file=sys.stderr)


if __name__ == "__main__":
    main()

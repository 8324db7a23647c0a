#!/usr/bin/env python3
"""Writes tests/data/tokenizer/llama3_vectors.json: texts and the ids that the
reference implementations give for them with Llama 3's tokenizer, for
tests/test_tokenizer.cpp. Dev-only: pip install tokenizers tiktoken.

    python3 tools/gen_tokenizer_vectors.py [--llama3-dir DIR] [--out FILE]

Each entry: {"name", "text", "ids"} where ids are HF `tokenizers`' ids without
BOS (add_special_tokens=False; special tokens in the text are matched), and
"bos_ids" for a few with BOS. tiktoken (allowed_special="all") is run on every
text too; the script stops if the two references disagree, since then there is
no single right answer to test against.
"""
import argparse
import json
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def handwritten():
    rng = random.Random(7)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return {
        "english": "The quick brown fox jumps over the lazy dog. It's 9:41 AM; isn't it?",
        "german": "Größenwahnsinnige Fußgängerübergänge überqueren: Straße, Maß, Ähre.",
        "french": "L'élève n'a pas dû s'arrêter à l'hôpital où naïveté rime avec Noël.",
        "russian": "Съешь же ещё этих мягких французских булок, да выпей чаю.",
        "greek": "Ξεσκεπάζω την ψυχοφθόρα βδελυγμία. Γαζέες καὶ μυρτιὲς δὲν θὰ βρῶ.",
        "arabic": "نص حكيم له سر قاطع وذو شأن عظيم مكتوب على ثوب أخضر ومغلف بجلد أزرق",
        "hebrew": "דג סקרן שט בים מאוכזב ולפתע מצא חברה",
        "hindi": "ऋषियों को सताने वाले दुष्ट राक्षसों के राजा रावण का सर्वनाश करने वाले विष्णुवतार भगवान श्रीराम",
        "thai": "เป็นมนุษย์สุดประเสริฐเลิศคุณค่า กว่าบรรดาฝูงสัตว์เดรัจฉาน",
        "chinese": "我能吞下玻璃而不伤身体。天地玄黄，宇宙洪荒。日月盈昃，辰宿列张。",
        "japanese": "いろはにほへと ちりぬるを わかよたれそ つねならむ カタカナ 漢字",
        "korean": "다람쥐 헌 쳇바퀴에 타고파. 키스의 고유조건은 입술끼리 만나야 하고",
        "vietnamese": "Tiếng Việt có dấu: Nguyễn, Đặng, Phước, ươn ướt.",
        "mixed_scripts": "abcабвαβγאבג一二三١٢٣১২৩𝟙𝟚𝟛Ⅻⅻ½¾",
        "python": "def f(x: int) -> int:\n    \"\"\"Doc.\"\"\"\n    if x <= 0:\n        return 1\n    return x * f(x - 1)  # recursion\n\n\nprint(f(10))\n",
        "cpp": "#include <vector>\nint main() {\n\tstd::vector<int> v{1, 2, 3};\n\tfor (auto& x : v) x *= 2;\n\treturn v[0] != 2;\n}\r\n",
        "json": '{"key": [1, 2.5e-3, null, true], "nested": {"a": "b\\n\\"c\\""}}',
        "html": "<div class=\"x\">&nbsp;&amp;<br/></div><!-- comment -->",
        "spaces_run": "a" + " " * 37 + "b" + " " * 200,
        "tabs_run": "\t\t\tx\t \t \ty\t\t\t",
        "newlines": "\n\n\na\r\n\r\n\rb\n \n  \n   c\r\r\n",
        "mixed_ws": " \t\n \u3000\u00a0\u2009x\u0085y\u2028z \u202f\u205f\u1680",
        "only_ws": "   \n\t  \r\n  ",
        "numbers": "0 12 123 1234 12345 123456789012345678901234567890 3.14159 -42 1,234,567 1e10 0x1F",
        "unicode_numbers": "٣٤٥٦ ١٢ ५६७ ²³¹ ⅷ 𝟠𝟡 ①②③ 十二",
        "emoji": "👋🏽 🇩🇪🇯🇵 👨‍👩‍👧‍👦 ❤️‍🔥 🤖💬 ☕️ 🧑🏿‍🚀 ✨✨✨",
        "special_inside": "Hello<|begin_of_text|>world<|eot_id|> <|start_header_id|>user<|end_header_id|>\n\nhi",
        "special_adjacent": "<|end_of_text|><|end_of_text|>x<|reserved_special_token_100|>",
        "special_partial": "<|begin_of_text <|eot_id| <|<|eot_id|>|> <|reserved_special_token_999|>",
        "contractions": "'s 't 're 've 'm 'll 'd 'S 'T 'RE 'Ve 'M 'LL 'D 'ſ 'ſt x's y'S don't I'M",
        "apostrophes": "'hello' ''s '' ' s '\n'ss rock'n'roll ’s",
        "long_word": "a" * 3000,
        "long_letters": "".join(rng.choice(letters) for _ in range(2500)),
        "long_digits": "".join(rng.choice("0123456789") for _ in range(1000)),
        "long_punct": "!@#$%^&*()_+-=[]{}|;:,.<>?/~`" * 40,
        "base64_blob": "".join(rng.choice(letters + "0123456789+/") for _ in range(1500)) + "==",
        "url": "https://example.com/path/to/page?query=1&b=ü#frag mailto:x@y.z",
        "combining": "e\u0301 a\u0308\u0304 n\u0303 \u0915\u094d\u0937 Z\u0351\u036b\u0343\u036a\u0302",
        "new_unicode": "\U00011F04\U00011F05\U00011F12 \U00031350\U00031351 \U0001E4D0\U0001E4D1 \U0001E030",
        "control_chars": "a\x00b\x01c\x1bd\x7fe\x0cf\x0bg",
        "private_use": "\ue000\uf8ff \U000f0000 \ufffd\ufeff\u200b\u200d",
    }


def fuzz(count, seed):
    rng = random.Random(seed)
    alphabet = list("aZs'tlLrReEvVmMdD0159 \t\r\n.,!?-_()") + [
        "\u3000", "\u00a0", "\u2009", "\u0085", "\u2028", "\u017f", "é", "ß", "я", "中", "ア", "٣",
        "२", "😀", "\u0301", "\u200b", "\U00011F04", "½", "Ⅻ", "<|eot_id|>", "<|", "|>", "  ", "\r\n"]
    out = {}
    for i in range(count):
        n = rng.randint(1, 30)
        out[f"fuzz_{i:03d}"] = "".join(rng.choice(alphabet) for _ in range(n))
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--llama3-dir", default=os.path.join(HERE, "..", "..", "shared", "data", "llama3"))
    p.add_argument("--out", default=os.path.join(HERE, "..", "tests", "data", "tokenizer", "llama3_vectors.json"))
    args = p.parse_args()
    import tiktoken
    import tokenizers
    from tiktoken.load import load_tiktoken_bpe
    from tokenizers import Tokenizer

    hf = Tokenizer.from_file(os.path.join(args.llama3_dir, "tokenizer.json"))
    specials = {t.content: i for i, t in hf.get_added_tokens_decoder().items()}
    tt = tiktoken.Encoding(name="llama3", pat_str=LLAMA3_PATTERN,
                           mergeable_ranks=load_tiktoken_bpe(os.path.join(args.llama3_dir, "tokenizer.model")),
                           special_tokens=specials)
    with open(os.path.join(args.llama3_dir, "..", "text", "tinyshakespeare.txt"), encoding="utf-8") as f:
        shakespeare = f.read(3000)

    texts = handwritten()
    texts["shakespeare_head"] = shakespeare
    texts.update(fuzz(400, seed=1))
    entries = []
    for name, text in texts.items():
        ids = hf.encode(text, add_special_tokens=False).ids
        ref = tt.encode(text, allowed_special="all")
        if ids != ref:
            sys.exit(f"HF tokenizers and tiktoken disagree on {name!r}: {ids} vs {ref}")
        entry = {"name": name, "text": text, "ids": ids}
        if name in ("english", "special_inside", "only_ws"):
            entry["bos_ids"] = hf.encode(text, add_special_tokens=True).ids
        entries.append(entry)
    doc = {
        "generator": "tools/gen_tokenizer_vectors.py",
        "reference": f"tokenizers {tokenizers.__version__}, tiktoken {tiktoken.__version__}",
        "tokenizer": "Llama 3 (shared/data/llama3)",
        "vectors": entries,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(doc, f, ensure_ascii=False, indent=0)
        f.write("\n")
    print(f"wrote {len(entries)} vectors to {args.out} ({os.path.getsize(args.out)} bytes)")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Checks a `ckpt_convert export` directory against HuggingFace transformers.

  check_hf_export.py tokens --model HFDIR --out TOKENS.safetensors [--batch 2] [--seq 64] [--seed 0]
      writes input_ids (I32 [B, T], random ids below vocab_size, BOS first when
      the config has one) for intellect_forward. Needs only the standard library.

  check_hf_export.py check --model HFDIR --tokens TOKENS.safetensors --logits FORWARD.safetensors
                           [--tol X] [--device cpu|cuda]
      loads HFDIR with transformers.AutoModelForCausalLM (fp32, eager attention),
      runs input_ids, and compares its logits and loss (labels = input_ids) with
      intellect_forward's output for the same directory. The tolerance on
      max|ours - hf| / max|hf| is 1e-4 for a float32 export and 2e-2 for a
      bfloat16 one (from config.json's torch_dtype) unless --tol is given.
      Exit 0 when both match, 1 when they do not or the check cannot run.

Needs torch, transformers and safetensors (the GPU machines have them).
"""
import argparse
import json
import os
import random
import struct
import sys


def read_config(model_dir):
    path = os.path.join(model_dir, "config.json")
    try:
        with open(path) as f:
            return json.load(f)
    except OSError as e:
        sys.exit(f"check_hf_export: cannot read {path}: {e.strerror} (is {model_dir} an exported HF directory?)")


def write_tokens(args):
    cfg = read_config(args.model)
    vocab = int(cfg["vocab_size"])
    seq = min(args.seq, int(cfg.get("max_position_embeddings") or args.seq))
    bos = cfg.get("bos_token_id")
    rng = random.Random(args.seed)
    ids = []
    for _ in range(args.batch):
        row = [rng.randrange(vocab) for _ in range(seq)]
        if isinstance(bos, int) and 0 <= bos < vocab:
            row[0] = bos
        ids.extend(row)
    header = {
        "__metadata__": {"format": "pt"},
        "input_ids": {"dtype": "I32", "shape": [args.batch, seq], "data_offsets": [0, 4 * len(ids)]},
    }
    text = json.dumps(header, separators=(",", ":"))
    text += " " * ((8 - len(text) % 8) % 8)  # data 8-byte aligned, as safetensors writers do
    tmp = args.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text.encode())
        f.write(struct.pack(f"<{len(ids)}i", *ids))
    os.replace(tmp, args.out)
    print(f"check_hf_export: wrote input_ids [{args.batch}, {seq}] (vocab {vocab}) to {args.out}")
    return 0


def rel_error(ours, ref):
    """max|ours - ref| / max|ref|, the measure tests/test_util.h uses."""
    diff = (ours.double() - ref.double()).abs().max().item()
    scale = max(ref.double().abs().max().item(), 1e-6)
    return diff, scale, diff / scale


def check(args):
    try:
        import torch
        import transformers
        from safetensors.torch import load_file
    except ImportError as e:
        print(f"check_hf_export: {e}: this check needs torch, transformers and safetensors", file=sys.stderr)
        return 1

    cfg = read_config(args.model)
    dtype = cfg.get("torch_dtype") or cfg.get("dtype") or "float32"
    tol = args.tol if args.tol is not None else (1e-4 if dtype == "float32" else 2e-2)

    ids = load_file(args.tokens)["input_ids"].long()
    ours = load_file(args.logits)
    if "logits" not in ours:
        print(f"check_hf_export: {args.logits} has no 'logits' (is it intellect_forward's output?)", file=sys.stderr)
        return 1
    our_logits = ours["logits"].float()

    # transformers 4.56 renamed from_pretrained's torch_dtype to dtype; v5 warns on the old name.
    version = tuple(int(x) for x in transformers.__version__.split(".")[:2] if x.isdigit())
    dtype_kw = {"dtype": torch.float32} if version >= (4, 56) else {"torch_dtype": torch.float32}
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
        torch.backends.cudnn.allow_tf32 = False
    model = transformers.AutoModelForCausalLM.from_pretrained(
        args.model, attn_implementation="eager", **dtype_kw)
    model.to(args.device).eval()
    print(f"check_hf_export: transformers {transformers.__version__}, torch {torch.__version__}; "
          f"{type(model).__name__} from {args.model} ({dtype} weights, "
          f"{sum(p.numel() for p in model.parameters())} parameters), run in float32 on {args.device}")

    with torch.no_grad():
        out = model(input_ids=ids.to(args.device), labels=ids.to(args.device))
    hf_logits = out.logits.float().cpu()
    if tuple(hf_logits.shape) != tuple(our_logits.shape):
        print(f"check_hf_export: FAIL: logits shape {tuple(our_logits.shape)} from intellect_forward, "
              f"{tuple(hf_logits.shape)} from transformers", file=sys.stderr)
        return 1

    diff, scale, rel = rel_error(our_logits, hf_logits)
    agree = (our_logits.argmax(-1) == hf_logits.argmax(-1)).float().mean().item()
    print(f"logits [{', '.join(map(str, hf_logits.shape))}]: max |diff| {diff:.3e}, max |hf| {scale:.3e}, "
          f"relative error {rel:.3e} (tolerance {tol:.0e}); argmax agrees at {100 * agree:.2f}% of positions")
    ok = rel <= tol
    if "loss" in ours:
        our_loss, hf_loss = ours["loss"].float().item(), out.loss.float().item()
        loss_rel = abs(our_loss - hf_loss) / max(abs(hf_loss), 1e-6)
        print(f"loss: intellect {our_loss:.6f}, transformers {hf_loss:.6f}, relative error {loss_rel:.3e}")
        ok = ok and loss_rel <= tol

    if any(os.path.exists(os.path.join(args.model, f)) for f in ("tokenizer.json", "tokenizer.model")):
        try:
            tok = transformers.AutoTokenizer.from_pretrained(args.model)
            print(f"tokenizer: {type(tok).__name__}, {len(tok)} tokens")
        except Exception as e:  # reported, not failed: the weights are what this checks
            print(f"tokenizer: transformers could not load it: {e}")

    print("check_hf_export: " + ("OK" if ok else "FAIL: intellect_forward and transformers disagree"))
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("tokens", help="write an input_ids file for intellect_forward")
    t.add_argument("--model", required=True)
    t.add_argument("--out", required=True)
    t.add_argument("--batch", type=int, default=2)
    t.add_argument("--seq", type=int, default=64)
    t.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("check", help="compare transformers' logits with intellect_forward's")
    c.add_argument("--model", required=True)
    c.add_argument("--tokens", required=True)
    c.add_argument("--logits", required=True, help="intellect_forward --out file")
    c.add_argument("--tol", type=float, default=None)
    c.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = p.parse_args()
    return write_tokens(args) if args.command == "tokens" else check(args)


if __name__ == "__main__":
    sys.exit(main())

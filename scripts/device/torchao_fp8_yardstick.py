#!/usr/bin/env python3
"""The PyTorch yardstick with FP8 linear layers (torchao's float8 training), for
issue 14's FP8 comparison: our `precision.matmul: fp8` against PyTorch's own
FP8, not against its bf16.

A yardstick, never part of the product. It runs the shared yardstick
(`../shared/bench/torch_llama_bench.py`, unchanged on disk) with one change
made in memory before it runs: after the model is built, torchao's
`convert_to_float8_training` swaps its nn.Linear layers for Float8Linear
(tensorwise dynamic scaling, the recipe torchao calls its fastest: forward,
input-gradient and weight-gradient GEMMs all in FP8, as our
`precision.fp8_weight_gradients: true`).

  python3 torchao_fp8_yardstick.py BENCH.py [--fp8-head 0|1] [--recipe tensorwise|rowwise] -- yardstick flags

--fp8-head 0 (the default) keeps the classifier in bf16, as our FP8 path
does; 1 converts it too. The JSON line the yardstick prints names the
variant in "impl".
"""
import argparse
import sys

p = argparse.ArgumentParser()
p.add_argument("bench")
p.add_argument("--fp8-head", type=int, default=0)
p.add_argument("--recipe", default="tensorwise")
a, rest = p.parse_known_args()
if rest and rest[0] == "--":
    rest = rest[1:]

import torchao  # noqa: E402  fail here, with the import error, when torchao is missing
from torchao.float8 import Float8LinearConfig, convert_to_float8_training  # noqa: E402

src = open(a.bench).read()
anchor = "m = Model().to(dev).to(torch.bfloat16)\n"
impl = 'impl="torch"'
if src.count(anchor) != 1 or src.count(impl) != 1:
    sys.exit(f"torchao_fp8_yardstick: {a.bench} no longer has the lines this wrapper hooks "
             f"({anchor.strip()!r} and {impl!r}); update the wrapper to the yardstick's new text")
tag = f"torch+float8-{a.recipe}" + ("+head" if a.fp8_head else "")
hook = (anchor +
        "_cfg = _Float8LinearConfig.from_recipe_name(_recipe)\n"
        "_filter = (lambda mod, fqn: True) if _fp8_head else (lambda mod, fqn: fqn != 'head')\n"
        "_convert(m, config=_cfg, module_filter_fn=_filter)\n"
        "print('float8 linears:', sum(type(x).__name__ == 'Float8Linear' for x in m.modules()), file=sys.stderr)\n")
src = src.replace(anchor, hook).replace(impl, f'impl="{tag}"')
sys.argv = [a.bench] + rest
g = {"__name__": "__main__", "_Float8LinearConfig": Float8LinearConfig, "_convert": convert_to_float8_training,
     "_recipe": a.recipe, "_fp8_head": a.fp8_head}
print(f"torchao {torchao.__version__}, recipe {a.recipe}, classifier in {'FP8' if a.fp8_head else 'bf16'}",
      file=sys.stderr)
exec(compile(src, a.bench, "exec"), g)

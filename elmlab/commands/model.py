"""`elmlab allocate`: the configuration a budget buys, with its exact count, k_e, k_c and FLOPs."""

from __future__ import annotations

import argparse
import json

from elmlab.commands.train import count


def register(sub) -> None:
    p = sub.add_parser("allocate", help="the largest configuration within a parameter budget")
    p.add_argument("--budget", type=count, required=True, help="parameters, e.g. 3.5e6")
    p.add_argument("--d-m", type=int, help="fix d_m; N is the largest that fits (default when neither is given)")
    p.add_argument("--n-neurons", type=int, help="fix N; d_m is the largest that fits")
    p.add_argument("--d-tree", type=int, default=50)
    p.add_argument("--d-brch", type=int, default=15)
    p.add_argument("--vocab", type=int, default=204, help="n_in = n_out (default: enwik8's 204)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=run, _parser=p)


def run(args: argparse.Namespace) -> int:
    from elm_core.budget import allocate, breakdown, count_params, flops_per_step

    fixed = dict(d_tree=args.d_tree, d_brch=args.d_brch, n_in=args.vocab, n_out=args.vocab)
    if args.n_neurons is not None and args.d_m is None:
        cfg = allocate(args.budget, n_neurons=args.n_neurons, **fixed)
    else:
        cfg = allocate(args.budget, d_m=args.d_m or 15, **fixed)
    out = {"n_neurons": cfg.n_neurons, "d_m": cfg.d_m, "d_tree": cfg.d_tree, "d_brch": cfg.d_brch,
           "k_e": cfg.k_e, "k_c": cfg.k_c, "params": count_params(cfg), "flops_per_step": flops_per_step(cfg),
           "breakdown": breakdown(cfg)}
    if args.json:
        print(json.dumps(out))
    else:
        for key, value in out.items():
            print(f"{key:>15}: {value}")
    return 0

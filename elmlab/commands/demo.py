"""`elmlab demo load`: import the shipped demo result set into the store."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("demo", help="the demo result set (iso-budget sweeps on the bundled corpus)")
    demo_sub = p.add_subparsers(dest="demo_command", metavar="ACTION", required=True)
    load = demo_sub.add_parser("load", help="import the demo runs into the store")
    load.add_argument("--store", type=Path, help="store folder (default: the ELMLAB_HOME store)")
    load.set_defaults(func=run_load, _parser=load)


def run_load(args: argparse.Namespace) -> int:
    from elm_core.demo import load_demo
    from elm_core.settings import get_settings
    from elm_core.store import Store

    store = Store(args.store or get_settings().store_path)
    n = load_demo(store)
    print(f"loaded {n} demo runs into {store.path}")
    return 0

"""``python -m phys_pipeline.cache``: look after a disk cache from a terminal.

    python -m phys_pipeline.cache [--root DIR] ls [--limit N]
    python -m phys_pipeline.cache [--root DIR] du [--by node|stage]
    python -m phys_pipeline.cache [--root DIR] verify [--remove]
    python -m phys_pipeline.cache [--root DIR] prune [--older-than 7d] [--max-bytes 10G] [--node ID]
    python -m phys_pipeline.cache [--root DIR] clear --yes

``--root`` defaults to ``CacheConfig().disk_root`` (``.cache/phys-pipeline``). Sizes take K, M,
G and T suffixes (powers of 1000); ages take s, m, h and d.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from . import admin
from .config import CacheConfig
from .disk import DiskStore

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]?)B?$", re.IGNORECASE)
_AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_FACTORS = {"": 1, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def size(text: str) -> int:
    """``"10G"`` -> 10_000_000_000 (argparse type)."""
    match = _SIZE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size such as 500M or 10G")
    return int(float(match[1]) * _FACTORS[match[2].upper()])


def age(text: str) -> float:
    """``"7d"`` -> seconds (argparse type)."""
    match = _AGE.match(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not an age such as 30m, 12h or 7d")
    return float(match[1]) * _SECONDS[match[2]]


def human(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if nbytes < 1000:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} TB"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m phys_pipeline.cache", description="Look after a phys-pipeline disk cache."
    )
    parser.add_argument("--root", default=str(CacheConfig().disk_root), help="the cache directory")
    commands = parser.add_subparsers(dest="command", required=True)
    ls = commands.add_parser("ls", help="list entries, most recently used first")
    ls.add_argument("--limit", type=int, default=50, help="how many to show (0: all)")
    du = commands.add_parser("du", help="bytes per node or stage")
    du.add_argument("--by", choices=("node", "stage"), default="node")
    check = commands.add_parser("verify", help="check every entry's signature")
    check.add_argument("--remove", action="store_true", help="delete entries that fail")
    prune = commands.add_parser("prune", help="remove old entries, or down to a budget")
    prune.add_argument("--older-than", type=age, help="last used longer ago than this")
    prune.add_argument("--max-bytes", type=size, help="then least recently used down to this")
    prune.add_argument("--node", action="append", default=[], help="every entry of this node")
    clear = commands.add_parser("clear", help="remove every entry")
    clear.add_argument("--yes", action="store_true", help="really")
    return parser


def _ls(store: DiskStore, args: argparse.Namespace, out: TextIO) -> int:
    infos = sorted(admin.entries(store), key=lambda i: -i.used)
    now = time.time()
    for info in infos if args.limit <= 0 else infos[: args.limit]:
        hours = (now - info.used) / 3600
        size_text = human(info.nbytes)
        out.write(f"{info.key}  {size_text:>9}  {hours:7.1f} h ago  {info.node} ({info.stage})\n")
    out.write(f"{len(infos)} entries, {human(sum(i.nbytes for i in infos))} in {store.root}\n")
    return 0


def _du(store: DiskStore, args: argparse.Namespace, out: TextIO) -> int:
    rows = admin.usage(store, by=args.by)
    total = admin.Usage("total", sum(r.entries for r in rows), sum(r.nbytes for r in rows))
    width = max((len(r.name) for r in (*rows, total)), default=5)
    for row in (*rows, total):
        out.write(f"{row.name:<{width}}  {row.entries:>7} entries  {human(row.nbytes):>9}\n")
    return 0


def _verify(store: DiskStore, args: argparse.Namespace, out: TextIO) -> int:
    report = admin.verify(store, remove=args.remove)
    for key, reason in report.bad.items():
        out.write(f"{key}  {reason}\n")
    done = "removed" if args.remove else "left in place (verify --remove deletes them)"
    out.write(f"{report.checked} entries checked, {len(report.bad)} failed: {done}\n")
    return 1 if report.bad and not args.remove else 0


def _prune(store: DiskStore, args: argparse.Namespace, out: TextIO) -> int:
    if args.older_than is None and args.max_bytes is None and not args.node:
        _parser().error("prune needs --older-than, --max-bytes or --node")
    removed = admin.prune(
        store, older_than_s=args.older_than, max_bytes=args.max_bytes, nodes=args.node
    )
    out.write(f"removed {len(removed)} entries, {human(sum(i.nbytes for i in removed))}\n")
    return 0


def _clear(store: DiskStore, args: argparse.Namespace, out: TextIO) -> int:
    if not args.yes:
        _parser().error(f"clear removes every entry in {store.root}: add --yes")
    store.clear()
    out.write(f"cleared {store.root}\n")
    return 0


_COMMANDS = {"ls": _ls, "du": _du, "verify": _verify, "prune": _prune, "clear": _clear}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command; returns the exit status (``verify``: 1 when entries failed)."""
    args = _parser().parse_args(argv)
    return _COMMANDS[args.command](DiskStore(args.root), args, out or sys.stdout)


if __name__ == "__main__":
    sys.exit(main())

"""`netdsl cache`: show and clear the cache folder (compiled models and TensorRT engines, :mod:`netdsl.cache`)."""

from __future__ import annotations

import argparse

from ..errors import UsageError
from . import EXIT_OK


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:,} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover - the loop returns


def cmd_info(args: argparse.Namespace) -> int:
    from .. import cache
    from ..machine import cache_home
    from ..text import plain

    root = cache_home()
    found = cache.entries(root)
    limit = cache.max_bytes()
    print(f"cache folder: {plain(root)}{'' if root.is_dir() else ' (not created yet)'}")
    print(f"compiled-model cache: {'on' if cache.enabled() else 'off (NETDSL_CACHE)'}; "
          f"size cap {_size(limit) if limit else 'none'} (NETDSL_CACHE_MAX), least recently used entries go first")
    for sub, what in (("models", "compiled models"), ("trt", "TensorRT engines")):
        mine = [e for e in found if e.kind == sub]
        print(f"{what + ':':18} {len(mine)} entr{'y' if len(mine) == 1 else 'ies'}, "
              f"{_size(cache.folder_size(root / sub))} in {plain(root / sub)}")
    return EXIT_OK


def cmd_clear(args: argparse.Namespace) -> int:
    from .. import cache
    from ..machine import cache_home
    from ..text import plain

    if args.models and args.engines:
        raise UsageError("give --models or --engines, not both (neither clears everything)")
    kinds = ("models",) if args.models else ("trt",) if args.engines else tuple(cache.KINDS)
    root = cache_home()
    count, freed = cache.clear(root, kinds)
    print(f"removed {count} file(s), {_size(freed)}, from {plain(root)} ({', '.join(kinds)})")
    return EXIT_OK


def register(sub) -> None:
    p = sub.add_parser("cache", help="show or clear the cache of compiled models and TensorRT engines")
    p.set_defaults(func=cmd_info)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    info = actions.add_parser("info", help="location, entries and sizes (the default)")
    info.set_defaults(func=cmd_info)
    clear = actions.add_parser("clear", help="remove cached models and engines")
    clear.add_argument("--models", action="store_true", help="only the compiled models")
    clear.add_argument("--engines", action="store_true", help="only the TensorRT engines (and timing cache)")
    clear.set_defaults(func=cmd_clear)

"""``python -m corral.bench SCENARIO ...``: the same as ``corral bench SCENARIO ...``."""

import argparse
import sys

from corral.bench import command as bench
from corral.core.errors import CorralError
from corral.core.log import configure


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m corral.bench")
    bench.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    configure("logfmt")
    try:
        return args.func(args)
    except CorralError as e:
        print(f"corral bench: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

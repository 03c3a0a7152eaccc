"""House rule: no function in src/ is longer than 80 lines. Prints offenders; exit 1 if any.

python scripts/check_function_length.py [--max 80] [PATHS...]
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def long_functions(paths: list[Path], limit: int) -> list[str]:
    rows = []
    for root in paths:
        files = [root] if root.is_file() else sorted(root.rglob("*.py"))
        for p in files:
            tree = ast.parse(p.read_text(), filename=str(p))
            for n in ast.walk(tree):
                if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    length = (n.end_lineno or n.lineno) - n.lineno + 1
                    if length > limit:
                        rows.append(f"{p}:{n.lineno} {n.name} ({length} lines)")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("paths", nargs="*", type=Path, default=[Path("src")])
    ap.add_argument("--max", type=int, default=80)
    args = ap.parse_args()
    rows = long_functions(args.paths, args.max)
    print("\n".join(rows) if rows else f"no function over {args.max} lines")
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main())

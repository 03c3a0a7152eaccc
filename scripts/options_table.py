"""Print the option table of every stage (docs/design.md, "Options") from the stage configs.

    python scripts/options_table.py > /tmp/options.md

One row per config field: the Python keyword and TOML key (the same name), the CLI spelling, the
default and the help text. tests/test_package.py checks that docs/design.md lists these fields.
"""

from __future__ import annotations

import dataclasses

from plmsae.config import default_of, flag, required
from plmsae.stages import STAGES


def rows() -> list[str]:
    out = [
        "| stage | option (Python, TOML) | CLI | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, fn in STAGES.items():
        for f in dataclasses.fields(fn.config):
            if f.metadata.get("hidden"):
                cli = f"`{flag(f.name)}`"
                meaning = "(hidden; for tests) " + f.metadata["help"]
            else:
                positional = f.metadata.get("positional")
                cli = f"`{f.name.upper()}`" if positional else f"`{flag(f.name)}`"
                meaning = f.metadata["help"]
            default = "required" if required(f) else f"`{default_of(f)!r}`"
            meaning = meaning.replace("|", "\\|")
            out.append(f"| `{name}` | `{f.name}` | {cli} | {default} | {meaning} |")
    return out


if __name__ == "__main__":
    print("\n".join(rows()))

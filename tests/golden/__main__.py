"""Rewrite the golden files from the commands' real output: `python -m tests.golden`."""

from __future__ import annotations

import os

from tests.golden import COMMANDS, FOLDER, path, run


def main() -> None:
    # As in the tests: never reach a hub, whatever the machine's settings.
    os.environ["HF_HUB_OFFLINE"] = "1"
    stale = {p for p in FOLDER.glob("*.json")} - {path(name) for name in COMMANDS}
    for old in sorted(stale):
        old.unlink()
        print(f"removed {old.name}")
    for name in COMMANDS:
        output = run(name)
        target = path(name)
        changed = not target.is_file() or target.read_text(encoding="utf-8") != output
        target.write_text(output, encoding="utf-8")
        print(f"{'wrote' if changed else 'same '} {target.name}")


if __name__ == "__main__":
    main()

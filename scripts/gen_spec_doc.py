"""Write docs/spec.md from the workload schema (`make docs`); `--check` only compares and exits 1 when it differs.

The adapter around the pure `coordinator.spec_doc`: it reads the source of the modules the spec dataclasses live in
(for the comments above their fields) and the example files (examples/*.yaml, in name order), and writes the file.

    .venv/bin/python scripts/gen_spec_doc.py            # regenerate docs/spec.md
    .venv/bin/python scripts/gen_spec_doc.py --check    # exit 1 (and say so) when docs/spec.md is out of date
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere: import the checkout's packages
    sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from coordinator import spec_doc  # noqa: E402

TARGET = REPO / "docs" / "spec.md"
EXAMPLES = REPO / "examples"


def comments() -> dict[str, str]:
    """The `#` comments above every spec dataclass field, from the source of the modules that define them."""
    out: dict[str, str] = {}
    for module in sorted({cls.__module__ for cls in spec_doc.spec_classes()}):
        out.update(spec_doc.field_comments(inspect.getsource(sys.modules[module])))
    return out


def documents() -> list[tuple[str, object]]:
    """(examples/NAME.yaml, document) for every document of every example file, in file name order."""
    out: list[tuple[str, object]] = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        rel = path.relative_to(REPO).as_posix()
        out += [(rel, doc) for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]
    return out


def summaries() -> dict[str, str]:
    """examples/NAME.yaml -> the first sentence of its header comment."""
    return {path.relative_to(REPO).as_posix(): spec_doc.header_summary(path.read_text(encoding="utf-8"))
            for path in sorted(EXAMPLES.glob("*.yaml"))}


def generate() -> str:
    return spec_doc.render(comments(), documents(), summaries=summaries())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 when docs/spec.md is stale")
    args = parser.parse_args(argv)
    text = generate()
    current = TARGET.read_text(encoding="utf-8") if TARGET.exists() else ""
    if args.check:
        if current != text:
            print(f"{TARGET.relative_to(REPO)} is out of date with the workload schema: run `make docs`",
                  file=sys.stderr)
            return 1
        return 0
    if current != text:
        TARGET.write_text(text, encoding="utf-8")
        print(f"wrote {TARGET.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

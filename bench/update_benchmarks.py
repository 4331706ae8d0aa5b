"""Copy the Markdown written by the bench scripts (bench/results/*.md) into BENCHMARKS.md.

    python bench/update_benchmarks.py                 # every section with a result
    python bench/update_benchmarks.py accuracy        # only these sections

Each result goes between its ``<!-- bench:NAME:start -->`` / ``<!-- bench:NAME:end -->`` markers; everything
else in BENCHMARKS.md (prose, other sections) is left as it is. Missing results leave their section untouched.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("accuracy", "default_cost", "features", "features_accuracy", "classifier", "predict_cli", "server_latency")


def splice(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- bench:{name}:start -->\n).*?(<!-- bench:{name}:end -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"BENCHMARKS.md has no <!-- bench:{name}:start/end --> markers")
    return pattern.sub(lambda m: m.group(1) + body.strip() + "\n" + m.group(2), text)


def main() -> None:
    path = REPO / "BENCHMARKS.md"
    text = path.read_text()
    wanted = sys.argv[1:] or SECTIONS
    unknown = [n for n in wanted if n not in SECTIONS]
    if unknown:
        raise SystemExit(f"unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}")
    for name in wanted:
        result = REPO / "bench" / "results" / f"{name}.md"
        if result.is_file():
            text = splice(text, name, result.read_text())
            print(f"updated {name} from {result.relative_to(REPO)}")
        else:
            print(f"kept {name} (no {result.relative_to(REPO)})", file=sys.stderr)
    path.write_text(text)


if __name__ == "__main__":
    main()

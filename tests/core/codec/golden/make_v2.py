"""How the golden v2 streams beside this file were made: with the codec as it was at
commit fc6cb19, from pens.mp4. Kept for the record; the test
(tests/core/codec/test_golden.py) only decodes them.

    git worktree add /tmp/v2code fc6cb19
    python tests/core/codec/golden/make_v2.py /tmp/v2code OUT_DIR
"""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, sys.argv[1])
from core.codec.files import encode_file, iter_decode
from core.codec.options import EncodeOptions

PENS = Path(__file__).resolve().parents[5] / "shared" / "data" / "pens.mp4"
out = sys.argv[2]
for bb in ("gridwarp", "hinerv"):
    dst = f"{out}/v2_{bb}.uarv"
    opts = EncodeOptions(
        backbone=bb, width=48, frames=16, clip_length=8, steps=40, seed=3, params=8000
    )
    encode_file(PENS, dst, opts)
    with open(dst, "rb") as f:
        header, it = iter_decode(f)
        frames = np.concatenate([fr for _, fr in it])
    assert header.version == 2
    np.savez_compressed(f"{out}/v2_{bb}_frames.npz", frames=frames)

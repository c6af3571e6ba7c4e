"""Per-image random streams: ImageStreams gives image_rng's numbers, to the bit."""

import pickle
import threading

import numpy as np
import pytest

from synthcount.compose import Composer
from synthcount.config import SceneConfig, SourceConfig
from synthcount.rng import DISTRACTOR_STREAM, EXEMPLAR_STREAM, ImageStreams, image_rng
from synthcount.sources import resolve_sources


def _draws(g):
    # Doubles, small and wide bounded integers (Lemire's 32- and 64-bit paths), a
    # 32-bit draw left in the buffer: any difference of state shows.
    return g.random(3).tolist(), g.integers(1000, size=5).tolist(), int(g.integers(2**40)), int(g.integers(7))


@pytest.mark.parametrize("seed", [0, 1, 12345, 2**32 - 1, 2**32, 2**64 + 5, 2**127 + 99, 2**200 + 1])
@pytest.mark.parametrize("stream", [0, DISTRACTOR_STREAM, EXEMPLAR_STREAM, 2**33])
def test_image_streams_equal_image_rng(seed, stream):
    st = ImageStreams(seed, stream)
    # Block edges, the last 32-bit index, and indices past it (image_rng itself).
    for idx in (0, 1, 255, 256, 257, 1000, 65535, 2**31, 2**32 - 1, 2**32, 2**40 + 3, 3):
        assert _draws(st.at(idx)) == _draws(image_rng(seed, idx, stream)), idx


def test_image_streams_restart_mid_stream_and_reject_bad_input():
    st = ImageStreams(9)
    g = st.at(5)
    g.random(7), g.integers(3)  # leave a half-used 32-bit buffer behind
    assert _draws(st.at(5)) == _draws(image_rng(9, 5))
    with pytest.raises(ValueError, match="index"):
        st.at(-1)
    with pytest.raises(ValueError, match="root_seed"):
        ImageStreams(-1)


def test_composer_streams_per_thread_and_pickle():
    scene = SceneConfig(min_visible=0.8, distractors=(0, 2))
    comp = Composer(scene, *resolve_sources(SourceConfig()))
    ref = Composer(scene, *resolve_sources(SourceConfig()))
    first = comp.compose(3, 17)
    again = pickle.loads(pickle.dumps(comp)).compose(3, 17)  # the per-thread generators stay behind
    assert all(np.array_equal(a, b) for a, b in zip(first[:2], again[:2]))
    out = {}

    def work(t):
        for i in range(t, 40, 4):
            out[i] = comp.compose(5, i)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(40):
        img, lab, rec = ref.compose(5, i)
        assert np.array_equal(img, out[i][0]) and np.array_equal(lab, out[i][1]), i
        assert int(rec["count"]) == int(out[i][2]["count"])

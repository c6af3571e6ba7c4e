"""Session-scoped fixture folders (built once per test session, see tests/fixtures.py)."""

import pytest

from tests import fixtures


@pytest.fixture(scope="session")
def msra_dir(tmp_path_factory):
    """MSRA10K-layout folder with the good objects ``fixtures.MSRA_GOOD``."""
    return fixtures.make_msra_dir(str(tmp_path_factory.mktemp("msra")))


@pytest.fixture(scope="session")
def bad_msra_dir(tmp_path_factory):
    """MSRA10K-layout folder with ``fixtures.BAD_MSRA_GOOD`` and the bad files of
    ``fixtures.BAD_MSRA_REASONS``."""
    return fixtures.make_bad_msra_dir(str(tmp_path_factory.mktemp("bad_msra")))


@pytest.fixture(scope="session")
def sun_dir(tmp_path_factory):
    """SUN397-layout tree (``fixtures.SUN_CLASSES``); the path of its SUN397 folder."""
    return fixtures.make_sun_dir(str(tmp_path_factory.mktemp("sun")))


@pytest.fixture(scope="session")
def rgba_dir(tmp_path_factory):
    """Folder of RGBA/LA/palette PNG cut-outs (``fixtures.RGBA_FILES``)."""
    return fixtures.make_rgba_dir(str(tmp_path_factory.mktemp("rgba")))


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (tiny models run fastest so on shared cores)."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)

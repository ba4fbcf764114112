"""Model tests run tiny tensors: one intra-op thread avoids thread start/sync overhead on the
shared 2-core CI machine (restored after each test so other test files are unaffected)."""
import pytest
import torch


@pytest.fixture(autouse=True)
def _single_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)

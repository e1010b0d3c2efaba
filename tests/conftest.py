"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Run torch on one thread: the test machine has 2 shared cores, and an oversubscribed OpenMP pool
    (2 threads while another process holds a core) makes matmuls ~10x slower. Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

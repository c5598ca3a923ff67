"""Fixtures shared by the test modules."""

from __future__ import annotations

import pytest
import torch

import andes_lib


@pytest.fixture(scope="module")
def proc():
    """The nano processor (tokenizer + image processor + chat template)."""
    return andes_lib.build_processor("nano")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny matrices: one intra-op thread is faster, and much faster when other processes share the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

"""The Numba CPU kernels (loss, LAMB) use as many threads as torch is allowed."""

import numba
import torch


def follow_torch_threads() -> None:
    """Give Numba torch's thread count. Numba's first use starts its OpenMP pool, which resets the OpenMP thread
    count that torch shares with it: torch's own setting is put back."""
    torch_threads = torch.get_num_threads()
    numba.set_num_threads(max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS)))
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)

"""SpecAugment as the MLPerf reference draws it: frequency and time bands (adaptive time width), no time warp.

Shape legend: B batch, F features, T frames, N masks.

The masks of a whole batch are drawn at once.
"""

import torch


class SpecAugment(torch.nn.Module):
    """The reference's SpecAugment (no time warp): features (B, F, T) + lengths (B,) -> masked features (B, F, T).

    For each utterance: ``freq_masks`` bands of width uniform in [min_freq, max_freq] starting uniformly in
    [0, max(1, F - width)), and time bands of width uniform in [min_time, max_time] starting uniformly in
    [0, max(1, T - width)), T being the padded batch length as in the reference. ``max_time`` in (0, 1) is
    adaptive: round(max_time * length) for each utterance (raised to min_time where smaller); so is ``time_masks``
    in (0, 1) for the count.
    Masked values become ``mask_value``. In eval mode the input passes unchanged.
    """

    def __init__(
        self,
        *,
        freq_masks: int,
        min_freq: int,
        max_freq: int,
        time_masks: float,
        min_time: int,
        max_time: float,
        mask_value: float = 0.0,
    ):
        super().__init__()
        if not isinstance(freq_masks, int) or freq_masks < 0:
            raise ValueError(f"freq_masks must be an int >= 0, got {freq_masks!r}")
        if not 0 <= min_freq <= max_freq:
            raise ValueError(f"need 0 <= min_freq <= max_freq, got min_freq={min_freq}, max_freq={max_freq}")
        if time_masks < 0 or (time_masks >= 1 and time_masks != int(time_masks)):
            raise ValueError(f"time_masks must be an int >= 0 or a fraction in (0, 1), got {time_masks!r}")
        if max_time < 0 or (max_time >= 1 and max_time != int(max_time)) or (max_time >= 1 and min_time > max_time):
            raise ValueError(f"max_time must be an int >= min_time or a fraction in (0, 1), got {max_time!r}")
        if min_time < 0:
            raise ValueError(f"min_time must be >= 0, got {min_time}")
        self.freq_masks = freq_masks
        self.min_freq = min_freq
        self.max_freq = max_freq
        self.time_masks = time_masks
        self.min_time = min_time
        self.max_time = max_time
        self.mask_value = mask_value

    @staticmethod
    def _adaptive(value: float, length: torch.Tensor) -> torch.Tensor:
        """(B,) lengths -> (B,) int64: round(value * length) for value in (0, 1), else value."""
        if 0 < value < 1:
            return torch.round(length.double() * value).long()  # half to even, as Python's round
        return torch.full_like(length, int(value), dtype=torch.long)

    @staticmethod
    def _uniform_int(low: torch.Tensor, high: torch.Tensor, shape, device) -> torch.Tensor:
        """Integers uniform in [low, high) elementwise (high > low), broadcast to shape."""
        return low + (torch.rand(shape, device=device, dtype=torch.float64) * (high - low)).long()

    def sample_masks(self, length: torch.Tensor, num_freq: int, num_frames: int):
        """Draw the masks of a batch.

        Args:
            length: (B,) valid frames per utterance.
            num_freq: F, features per frame.
            num_frames: T, padded frames of the batch.
        Returns:
            freq_start, freq_width: (B, freq_masks) int64.
            time_start, time_width: (B, N) int64, N the most time masks of any utterance; masks beyond an
                utterance's own count have width 0.
        """
        batch, device = length.shape[0], length.device
        fshape = (batch, self.freq_masks)
        freq_width = torch.randint(self.min_freq, self.max_freq + 1, fshape, device=device)
        freq_start = self._uniform_int(0, (num_freq - freq_width).clamp(min=1), fshape, device)

        counts = self._adaptive(self.time_masks, length)  # (B,)
        max_time = self._adaptive(self.max_time, length).clamp(min=self.min_time)[:, None]  # (B, 1)
        tshape = (batch, int(counts.max()) if batch else 0)
        time_width = self._uniform_int(self.min_time, max_time + 1, tshape, device)
        time_width = time_width * (torch.arange(tshape[1], device=device)[None, :] < counts[:, None])
        time_start = self._uniform_int(0, (num_frames - time_width).clamp(min=1), tshape, device)
        return freq_start, freq_width, time_start, time_width

    @staticmethod
    def _band_mask(start: torch.Tensor, width: torch.Tensor, size: int) -> torch.Tensor:
        """(B, N) starts and widths -> (B, size) bool, True inside any of the N bands."""
        pos = torch.arange(size, device=start.device)[None, None, :]  # (1, 1, size)
        inside = (pos >= start[..., None]) & (pos < (start + width)[..., None])  # (B, N, size)
        return inside.any(dim=1)

    @torch.no_grad()
    def forward(self, input_spec: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        """Features (B, F, T) + valid frames (B,) -> masked features (B, F, T) (unchanged in eval mode)."""
        if not self.training:
            return input_spec
        _, num_freq, num_frames = input_spec.shape
        freq_start, freq_width, time_start, time_width = self.sample_masks(length, num_freq, num_frames)
        freq = self._band_mask(freq_start, freq_width, num_freq)  # (B, F)
        time = self._band_mask(time_start, time_width, num_frames)  # (B, T)
        return input_spec.masked_fill(freq[:, :, None] | time[:, None, :], self.mask_value)

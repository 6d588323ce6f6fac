"""Window geometry of Swin: partition, relative position index and the cyclic-shift mask.

Pure functions of sizes (no learned state). The model keeps each block's relative position index as a
non-persistent buffer, rebuilt in `_init_weights` (transformers v5 builds models on the meta device before
it loads weights), and builds the shift mask of each input's size on every forward.
"""

from __future__ import annotations

import torch


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """Split a feature map into non-overlapping windows, row-major over windows and tokens.

    Args:
        x: (B, H, W, C) with H and W divisible by `window`.
    Returns:
        (B * nW, window * window, C) where nW = (H / window) * (W / window).
    """
    B, H, W, C = x.shape
    x = x.view(B, H // window, window, W // window, window, C)  # (B, nWh, M, nWw, M, C)
    x = x.permute(0, 1, 3, 2, 4, 5)  # (B, nWh, nWw, M, M, C)
    return x.reshape(B * (H // window) * (W // window), window * window, C)  # (B*nW, M*M, C)


def relative_position_index(window: int) -> torch.Tensor:
    """Index into the ((2M-1)^2, heads) bias table for every (query, key) pair of an MxM window.

    Token pairs with the same (dy, dx) offset share an entry: index = (dy + M-1) * (2M-1) + (dx + M-1).

    Returns:
        (M*M, M*M) long tensor with values in [0, (2M-1)^2).
    """
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(
        1
    )  # (2, M*M): row and column of each token
    offsets = coords[:, :, None] - coords[:, None, :]  # (2, M*M, M*M): query minus key, in [-(M-1), M-1]
    offsets = offsets + (window - 1)  # shift to [0, 2M-2]
    return offsets[0] * (2 * window - 1) + offsets[1]  # (M*M, M*M)


def shift_attention_mask(
    height: int, width: int, window: int, shift: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Additive attention mask of the shifted-window blocks (SW-MSA) on a height x width map.

    After the feature map is rolled by -shift on both axes, the windows along the bottom and right
    edges hold tokens from up to four regions that were not neighbours in the image. A token may
    attend only to tokens of its own region. Masked pairs get -inf (exact zero after softmax; every
    token can always attend to itself, so no row is entirely masked). A map padded to a multiple of
    the window (inputs of any size) takes the mask of its padded size, as the original Swin does.

    Returns:
        (nW, M*M, M*M) float32 on `device` (built there: no host-to-device copy) with 0 where attention is
        allowed and -inf where it is not, nW = (height / M) * (width / M).
    """
    if not 0 < shift < window <= min(height, width) or height % window or width % window:
        raise ValueError(
            f"need 0 < shift < window <= min(height, width) and height, width multiples of window, got "
            f"shift={shift}, window={window}, height={height}, width={width}"
        )
    region = torch.zeros(1, height, width, 1, device=device)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            region[:, rows, cols, :] = label
            label += 1
    region_windows = window_partition(region, window).squeeze(-1)  # (nW, M*M)
    different = region_windows[:, :, None] != region_windows[:, None, :]  # (nW, M*M, M*M)
    return torch.zeros(different.shape, device=device).masked_fill(different, float("-inf"))

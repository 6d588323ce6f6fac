import torch

from swin_tiny_hf import SwinTinyModel
from swin_tiny_hf.windows import relative_position_index, shift_attention_mask, window_partition

from conftest import tiny_config


def test_partition_gives_the_windows_as_contiguous_tiles_row_major():
    x = torch.arange(2 * 8 * 12 * 3, dtype=torch.float32).view(2, 8, 12, 3)
    windows = window_partition(x, 4)
    assert windows.shape == (2 * 2 * 3, 16, 3)
    # window k of image b is tile (k // 3, k % 3) of a 2x3 grid, its tokens row-major
    expected = [
        x[b, r * 4 : (r + 1) * 4, c * 4 : (c + 1) * 4].reshape(16, 3)
        for b in range(2)
        for r in range(2)
        for c in range(3)
    ]
    assert torch.equal(windows, torch.stack(expected))


def test_relative_index_maps_equal_offsets_to_equal_entries():
    M = 4
    index = relative_position_index(M)
    assert index.shape == (16, 16)
    assert index.min() == 0 and index.max() == (2 * M - 1) ** 2 - 1
    rows, cols = torch.arange(16) // M, torch.arange(16) % M
    offsets = torch.stack([rows[:, None] - rows[None, :], cols[:, None] - cols[None, :]], -1)  # (16, 16, 2)
    flat_offsets = offsets.view(-1, 2)
    flat_index = index.view(-1)
    same_offset = (flat_offsets[:, None] == flat_offsets[None, :]).all(-1)
    same_index = flat_index[:, None] == flat_index[None, :]
    assert torch.equal(same_offset, same_index)
    # every possible offset is used
    assert flat_index.unique().numel() == (2 * M - 1) ** 2


def _same_region(resolution, window, shift):
    """Independent rule: after rolling by -shift, token (r, c) came from ((r+shift) % R, (c+shift) % R);
    two tokens of a window were neighbours in the image iff both wrapped around on the same axes."""
    coords = torch.arange(resolution)
    wrapped = coords + shift >= resolution
    allowed = []
    for wr in range(resolution // window):
        for wc in range(resolution // window):
            r = torch.arange(wr * window, (wr + 1) * window).repeat_interleave(window)
            c = torch.arange(wc * window, (wc + 1) * window).repeat(window)
            key = wrapped[r] * 2 + wrapped[c]
            allowed.append(key[:, None] == key[None, :])
    return torch.stack(allowed)  # (nW, N, N)


def test_shift_mask_matches_the_wrap_around_rule():
    mask = shift_attention_mask(16, 16, 4, 2)
    allowed = _same_region(16, 4, 2)
    assert mask.shape == (16, 16, 16)
    assert torch.equal(mask == 0, allowed)
    assert torch.isneginf(mask[~allowed]).all()
    # only the last row and column of windows are split
    assert (mask.view(4, 4, 16, 16)[:3, :3] == 0).all()
    assert (mask.view(4, 4, 16, 16)[3] != 0).any() and (mask.view(4, 4, 16, 16)[:, 3] != 0).any()


def test_shifted_block_never_attends_across_regions(pixel_values):
    model = SwinTinyModel(tiny_config()).eval()
    out = model(pixel_values, output_attentions=True)
    shifted = out.attentions[1]  # stage 0, block 1: (B, nW, heads, N, N)
    allowed = _same_region(16, 4, 2)[None, :, None]  # (1, nW, 1, N, N)
    assert (shifted.masked_select(~allowed.expand_as(shifted)) == 0).all()
    assert (shifted.masked_select(allowed.expand_as(shifted)) > 0).all()


def test_shifted_block_output_ignores_tokens_of_other_regions():
    """Behavioural: changing a token changes, within one shifted attention, only tokens of its own region."""
    model = SwinTinyModel(tiny_config()).eval()
    block = model.stages[0].blocks[1]
    x = torch.randn(1, 16, 16, 16)
    # token at image (0, 0) is rolled to (14, 14): bottom-right window, its own region of the wrapped corner
    y = x.clone()
    y[0, 0, 0] += torch.randn(16)  # not a constant: LayerNorm would erase that

    def shifted_attention(t):
        rolled = torch.roll(block.norm1(t), (-2, -2), (1, 2))
        shift_mask = model.stages[0].shift_mask_for(16, 16, t.device)
        return torch.roll(block.attention(rolled, shift_mask)[0], (2, 2), (1, 2))

    with torch.no_grad():
        changed = (shifted_attention(x) - shifted_attention(y)).abs().amax(-1)[0] > 1e-6  # (16, 16), image coords
    # the wrapped corner region of that window holds image rows/cols {0, 1}: only those tokens may change
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[0:2, 0:2] = True
    assert torch.equal(changed, expected)


def test_shift_mask_is_built_on_the_device_asked_for():
    """No host-to-device copy on every forward at sizes other than the config's: the mask is made where it is used."""
    on_cpu = shift_attention_mask(8, 12, 4, 2)
    on_meta = shift_attention_mask(8, 12, 4, 2, device="meta")
    assert on_meta.device.type == "meta" and on_meta.shape == on_cpu.shape == (6, 16, 16)
    assert on_cpu.device.type == "cpu" and on_cpu.dtype == torch.float32

"""The reference training augmentation, run on a whole batch with each image's own random parameters.

torchvision's v2 transforms draw one set of parameters per call, so a (B, 3, H, W) batch would get one
crop, one pair of RandAugment operations and one colour jitter for all its images. Called once per
image they are right but slow on 64x64 images: the per-call dispatch costs more than the pixels. Here
each image still draws its own parameters, from the same distributions as torchvision's transforms:

- `BatchRandAugment`: every image draws its own operations and signs; the images that drew the same
  (operation, sign) go through torchvision's own RandAugment kernel together, one call per group.
- `BatchColorJitter`: every image draws its own factors and its own order of the four adjustments;
  the blends take per-image factors as tensors; hue rotates without the general HSV round trip.
- `ReferenceTrainAugmentation`: the recipe, RandomResizedCrop (per image: sizes differ) -> flip ->
  RandAugment -> ColorJitter -> float + normalise -> RandomErasing, returning one (B, 3, S, S) tensor.

kornia has per-sample batch augmentations too, but its RandAugment policy (operations and magnitudes)
is not torchvision's, and the reference recipe is torchvision's; `tests/test_batch_augmentation.py`
checks each batched operation image by image against torchvision's functionals.
"""

from __future__ import annotations

import math

import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F


def _runs(sorted_keys: torch.Tensor) -> list[tuple[int, slice]]:
    """(key, rows) for each run of equal values in sorted (B,) keys: the groups that share one operation."""
    values, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    ends = counts.cumsum(0).tolist()
    return [(key, slice(end - count, end)) for key, count, end in zip(values.tolist(), counts.tolist(), ends)]


# The colour adjustments take float32 images holding uint8 values (0..255) and truncate after each
# adjustment, which is what torchvision's uint8 kernels do when they convert back (`.to(torch.uint8)`).
# Staying in float saves a uint8 <-> float conversion per adjustment, and they work in place on
# (b, H, W) planes: on small images, fresh (b, 3, H, W) temporaries cost more than the arithmetic.


def _to_uint8_values(x: torch.Tensor) -> torch.Tensor:
    """Clamp to [0, 255] and truncate, in place: float32 holding what `.to(torch.uint8)` would give.

    floor is truncation here (the values are >= 0), and unlike trunc it is vectorised on CPU (20x faster).
    """
    return x.clamp_(0, 255).floor_()


def _blend_(image: torch.Tensor, other: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """torchvision's blend, ratio * image + (1 - ratio) * other, with one ratio per image, in place on image.

    addcmul rounds like torchvision's `add_(other, alpha=1 - ratio)`, so the uint8 results are identical.
    """
    ratio = ratio.view(-1, 1, 1, 1)  # (b,) -> (b, 1, 1, 1)
    return _to_uint8_values(image.mul_(ratio).addcmul_(other, 1.0 - ratio))


def _grayscale(image: torch.Tensor) -> torch.Tensor:
    """(b, 3, H, W) -> (b, 1, H, W) ITU-R 601 luma, floored as torchvision does for integer images."""
    return F.rgb_to_grayscale(image, num_output_channels=1).floor_()


def adjust_brightness_(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Scale every pixel of image i by factor[i], in place."""
    return _to_uint8_values(image.mul_(factor.view(-1, 1, 1, 1)))


def adjust_contrast_(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend image i with its mean grey level, by factor[i], in place."""
    return _blend_(image, _grayscale(image).mean(dim=(-3, -2, -1), keepdim=True), factor)


def adjust_saturation_(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Blend image i with its own greyscale version, by factor[i], in place."""
    return _blend_(image, _grayscale(image), factor)


def adjust_hue_(image: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by `factor` (b,) turns, keeping saturation and value, as torchvision's adjust_hue.

    torchvision converts to HSV and back. Since v = max and v * s = max - min, the way back needs only
    max, min and the new hue: channel c is max - (max - min) * clamp(min(k, 4 - k), 0, 1) with
    k = (n_c + 6 h) mod 6 and n = 5, 3, 1 for r, g, b, the closed form of torchvision's sector table.
    All intermediates live in one preallocated workspace (`out=` and in-place ops): on small images a
    fresh tensor per step costs more (page faults) than the arithmetic.
    """
    x = image.div_(255.0)  # (b, 3, H, W) in [0, 1]
    r, g, b = x.unbind(dim=-3)  # (b, H, W) each
    work = torch.empty((7,) + r.shape, dtype=x.dtype)
    maximum, minimum, spread, divisor, hue, other, mask = work.unbind(0)  # (b, H, W) each; masks are 0./1.
    torch.maximum(torch.maximum(r, g, out=maximum), b, out=maximum)
    torch.minimum(torch.minimum(r, g, out=minimum), b, out=minimum)
    torch.sub(maximum, minimum, out=spread)
    torch.clamp_min(spread, 1e-30, out=divisor)  # grey pixels: numerators are 0 too, so hue 0, as torchvision
    # Hue in sixths of a turn, from the channel that holds the maximum (r first, then g, as torchvision).
    # Selections are lerps with 0./1. weights (exact at 0 and 1): torch.where is 25x slower on CPU here.
    torch.sub(r, g, out=hue).div_(divisor).add_(4.0)  # max is b
    torch.sub(b, r, out=other).div_(divisor).add_(2.0)
    torch.lerp(hue, other, torch.eq(maximum, g, out=mask), out=hue)  # max is g
    torch.sub(g, b, out=other).div_(divisor)
    torch.lerp(hue, other, torch.eq(maximum, r, out=mask), out=hue)  # max is r
    hue.div_(6.0).add_(1.0).add_(factor.view(-1, 1, 1))  # rotated hue + 1, in (0.5, 2.5)
    hue.sub_(torch.floor(hue, out=other)).mul_(6.0)  # hue mod 1 (remainder is slow on CPU), in sixths: [0, 6)
    k, weight = divisor, other  # reuse: no longer needed
    for channel, offset in enumerate((5.0, 3.0, 1.0)):
        torch.add(hue, offset, out=k)  # [1, 11)
        k.sub_(torch.ge(k, 6.0, out=mask), alpha=6.0)  # mod 6
        torch.minimum(k, torch.mul(k, -1.0, out=weight).add_(4.0), out=weight).clamp_(0.0, 1.0)
        torch.addcmul(maximum, spread, weight, value=-1.0, out=x[:, channel])
    return x.mul_(255.999).floor_()  # torchvision's float -> uint8 conversion (>= 0: floor is truncation)


class BatchColorJitter:
    """v2.ColorJitter(brightness, contrast, saturation, hue) with independent parameters per image.

    As in torchvision, each image draws brightness, contrast and saturation factors uniformly from
    [1 - x, 1 + x], a hue shift from [-hue, hue], and a random order of the four adjustments.
    """

    ADJUSTMENTS = (adjust_brightness_, adjust_contrast_, adjust_saturation_, adjust_hue_)

    def __init__(self, brightness: float, contrast: float, saturation: float, hue: float):
        for name, value, limit in (
            ("brightness", brightness, None),
            ("contrast", contrast, None),
            ("saturation", saturation, None),
            ("hue", hue, 0.5),
        ):
            if value < 0 or (limit is not None and value > limit):
                raise ValueError(f"{name} must lie in [0, {limit or 'inf'}], got {value}.")
        self.ranges = [
            (1 - brightness, 1 + brightness),
            (1 - contrast, 1 + contrast),
            (1 - saturation, 1 + saturation),
            (-hue, hue),
        ]

    def draw(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 4) factors in the order of ADJUSTMENTS, (B, 4) order: order[i, k] is image i's k-th adjustment."""
        factors = torch.stack([torch.empty(batch).uniform_(low, high) for low, high in self.ranges], dim=1)
        order = torch.rand(batch, 4).argsort(dim=1)
        return factors, order

    def apply_float_(self, x: torch.Tensor, factors: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """Jitter float32 images holding uint8 values (B, 3, H, W); returns them in the input order.

        `x` is consumed: its memory is reused, so keep no other reference to it.
        """
        position = torch.arange(len(x))  # which input image each row of x holds
        spare = torch.empty_like(x)  # reordering ping-pongs between two buffers: fresh big tensors are slow
        for step in range(4):
            # Sort the rows by their step-th adjustment: each adjustment then works in place on one slice.
            keys = order[position, step]
            rows = torch.argsort(keys, stable=True)
            x, spare = torch.index_select(x, 0, rows, out=spare), x
            position = position[rows]
            for adjustment_id, group in _runs(keys[rows]):
                self.ADJUSTMENTS[adjustment_id](x[group], factors[position[group], adjustment_id])
        return torch.index_select(x, 0, position.argsort(), out=spare)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 -> jittered (B, 3, H, W) uint8."""
        return self.apply_float_(images.float(), *self.draw(images.shape[0])).to(images.dtype)


class BatchRandAugment:
    """v2.RandAugment(num_ops, magnitude) with independent operations per image.

    Uses torchvision's own policy table and kernels (`RandAugment._AUGMENTATION_SPACE` and
    `_apply_image_or_video_transform`, pinned with torchvision), so every operation is exactly
    torchvision's; only the grouping is new. As in torchvision, each of the `num_ops` rounds picks one
    operation uniformly and flips the sign of a signed magnitude with probability 1/2.
    """

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: int = 9,
        num_magnitude_bins: int = 31,
        interpolation: InterpolationMode = InterpolationMode.NEAREST,
        fill=None,
    ):
        self.policy = v2.RandAugment(num_ops, magnitude, num_magnitude_bins, interpolation, fill)  # validates
        self.names = list(self.policy._AUGMENTATION_SPACE)
        self.signed = torch.tensor([self.policy._AUGMENTATION_SPACE[name][1] for name in self.names])

    def magnitude(self, name: str, height: int, width: int) -> float:
        magnitudes_of, _ = self.policy._AUGMENTATION_SPACE[name]
        magnitudes = magnitudes_of(self.policy.num_magnitude_bins, height, width)
        return float(magnitudes[self.policy.magnitude]) if magnitudes is not None else 0.0

    def draw(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, num_ops) operation ids into `names`, (B, num_ops) bool: negate the magnitude."""
        operations = torch.randint(len(self.names), (batch, self.policy.num_ops))
        negate = torch.rand(batch, self.policy.num_ops) <= 0.5
        return operations, negate

    def apply(self, images: torch.Tensor, operations: torch.Tensor, negate: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        position = torch.arange(len(images))  # which input image each row of x holds
        x, spare = images, torch.empty_like(images)  # reorders ping-pong between two buffers; never into `images`
        for round_ in range(operations.shape[1]):
            # Sort the rows by (operation, sign) so that each group is one contiguous slice.
            chosen = operations[position, round_]
            keys = chosen * 2 + (negate[position, round_] & self.signed[chosen])
            order = torch.argsort(keys, stable=True)
            x, spare = torch.index_select(x, 0, order, out=spare), (x if round_ else torch.empty_like(images))
            position = position[order]
            for key, group in _runs(keys[order]):
                name, sign = self.names[key // 2], -1.0 if key % 2 else 1.0
                x[group] = self.policy._apply_image_or_video_transform(
                    x[group],
                    name,
                    sign * self.magnitude(name, height, width),
                    self.policy.interpolation,
                    self.policy._fill,
                )
        return torch.index_select(x, 0, position.argsort(), out=spare)  # back to the input order

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.apply(images, *self.draw(images.shape[0]))


class BatchRandomResizedCrop:
    """v2.RandomResizedCrop(size, scale, ratio) for a list of images (any sizes), parameters drawn for all at once.

    Same rule as torchvision: up to 10 attempts of an area fraction from `scale` and a log-uniform aspect
    ratio from `ratio`, the first crop that fits, else a central crop; then torchvision's resized_crop.
    """

    def __init__(
        self,
        size: int,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
        antialias: bool = True,
        attempts: int = 10,
    ):
        if not (0 < scale[0] <= scale[1]) or not (0 < ratio[0] <= ratio[1]):
            raise ValueError(f"scale and ratio must be increasing positive pairs, got scale={scale}, ratio={ratio}.")
        self.size, self.scale, self.ratio, self.antialias, self.attempts = size, scale, ratio, antialias, attempts

    def draw(self, heights: torch.Tensor, widths: torch.Tensor) -> torch.Tensor:
        """(B,) input heights and widths -> (B, 4) long: top, left, height, width of each crop."""
        batch = len(heights)
        H, W = heights.double().unsqueeze(1), widths.double().unsqueeze(1)  # (B, 1)
        area = H * W * torch.empty(batch, self.attempts, dtype=torch.float64).uniform_(*self.scale)  # (B, attempts)
        log_ratio = torch.empty(batch, self.attempts, dtype=torch.float64).uniform_(
            math.log(self.ratio[0]), math.log(self.ratio[1])
        )
        w = (area * log_ratio.exp()).sqrt().round()
        h = (area / log_ratio.exp()).sqrt().round()
        fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # first attempt that fits
        h, w = h.gather(1, first).squeeze(1), w.gather(1, first).squeeze(1)  # (B,)
        H, W = H.squeeze(1), W.squeeze(1)
        top = (torch.rand(batch, dtype=torch.float64) * (H - h + 1)).floor()
        left = (torch.rand(batch, dtype=torch.float64) * (W - w + 1)).floor()
        # Central crop where no attempt fits: the whole image, clipped to the ratio range.
        in_ratio = W / H
        center_w = torch.where(in_ratio > self.ratio[1], (H * self.ratio[1]).round(), W)
        center_h = torch.where(in_ratio < self.ratio[0], (W / self.ratio[0]).round(), H)
        missed = ~fits.any(dim=1)
        h, w = torch.where(missed, center_h, h), torch.where(missed, center_w, w)
        top = torch.where(missed, torch.div(H - h, 2, rounding_mode="floor"), top)
        left = torch.where(missed, torch.div(W - w, 2, rounding_mode="floor"), left)
        return torch.stack((top, left, h, w), dim=1).long()

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        """list of (3, H_i, W_i) -> (B, 3, size, size), same dtype."""
        boxes = self.draw(torch.tensor([i.shape[-2] for i in images]), torch.tensor([i.shape[-1] for i in images]))
        return torch.stack(
            [
                F.resized_crop(image, top, left, h, w, [self.size, self.size], antialias=self.antialias)
                for image, (top, left, h, w) in zip(images, boxes.tolist())
            ]
        )


class ReferenceTrainAugmentation:
    """The reference recipe on a batch: list of uint8 (3, H_i, W_i) images -> (B, 3, S, S) normalised float32.

    RandomResizedCrop(S, scale=(0.9, 1)) -> horizontal flip (p = hflip_prob) -> RandAugment(2, magnitude)
    -> ColorJitter(0.2, 0.2, 0.2, 0.05) -> float in [0, 1], normalise -> RandomErasing(p=0.1,
    scale=(0.02, 0.2), random values). Randomness comes from torch's global RNG: seed it per batch.
    """

    def __init__(
        self,
        image_size: int,
        mean: list[float],
        std: list[float],
        randaugment_magnitude: int = 5,
        hflip_prob: float = 0.5,
        erasing_prob: float = 0.1,
    ):
        for name, value in (("hflip_prob", hflip_prob), ("erasing_prob", erasing_prob)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value}.")
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std must be 3 values each (RGB), std positive; got mean={mean}, std={std}.")
        self.crop = BatchRandomResizedCrop(image_size, scale=(0.9, 1.0))
        self.hflip_prob = hflip_prob
        self.randaugment = BatchRandAugment(num_ops=2, magnitude=randaugment_magnitude)
        self.color_jitter = BatchColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.05)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.erasing_prob = erasing_prob
        self.erasing = v2.RandomErasing(p=1.0, scale=(0.02, 0.2), value="random")

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        x = self.crop(images)  # (B, 3, S, S) uint8
        flip = (torch.rand(len(images)) < self.hflip_prob).nonzero().flatten()
        x[flip] = x[flip].flip(-1)
        x = self.randaugment(x).float()  # (B, 3, S, S) float32 holding uint8 values
        x = self.color_jitter.apply_float_(x, *self.color_jitter.draw(len(images)))
        x = x.mul_(1.0 / 255).sub_(self.mean).div_(self.std)  # to [0, 1] and normalise, as v2's ToDtype + Normalize
        for i in (torch.rand(len(images)) < self.erasing_prob).nonzero().flatten().tolist():
            x[i] = self.erasing(x[i])
        return x

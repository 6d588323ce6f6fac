"""The image processor that ships with every saved model, and the one decoder that training and inference share.

`SwinTinyImageProcessor` is transformers' `ViTImageProcessor` (resize, rescale to [0, 1], normalise) that
first brings every input to what training sees, an RGB image of 8 bits per channel:
- 16-bit images (PIL modes "I;16"/"I", uint16 arrays and tensors) are scaled to 8 bits as the training
  decoder does, round(value / 257); the stock processor clips them, so they arrive white;
- float arrays and tensors with every value in [0, 1] are taken as images already rescaled: they become
  round(255 x value) and are rescaled once, not twice; floats in [0, 255] are rounded; other floats
  (normalised images, say) are refused with a ValueError naming the range found;
- 2-D arrays and tensors are grayscale images (the stock processor cannot tell them from a batch).

`decode_image_bytes` is the training data's decoder (TorchCodec, PIL for other formats, the first frame of
an animated image, EXIF orientation applied); the pipeline of a saved model decodes files with it too.

This file is copied beside the weights by `save_pretrained` (remote code): it imports nothing of this package.
"""

from __future__ import annotations

import io
import logging

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from transformers import ViTImageProcessor

try:  # TorchCodec links FFmpeg (and CUDA) libraries that a machine may lack: then PIL decodes everything
    from torchcodec.decoders import decode_image as _torchcodec_decode
except (ImportError, OSError, RuntimeError) as error:  # pragma: no cover (depends on the machine)
    _torchcodec_decode = None
    logging.getLogger(__name__).warning("TorchCodec is unusable here (%s); decoding images with PIL", error)

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def decode_image_bytes(data: bytes) -> torch.Tensor:
    """Encoded image bytes -> (3, H, W) uint8 RGB: grayscale, palette, alpha and 16-bit included.

    TorchCodec decodes JPEG, PNG, WebP, GIF, AVIF and HEIC (torchvision's decoders are deprecated since 0.29);
    other formats (BMP, TIFF, ...) go through PIL, as everything does where TorchCodec cannot be loaded. An
    animated image gives its first frame, as PIL (and so transformers' `load_image`) does. Raises ValueError
    for empty data, and whatever the decoders raise for data they cannot read.
    """
    if len(data) == 0:
        raise ValueError("the image has no bytes (an empty file)")
    if _torchcodec_decode is not None:
        try:
            frames = _torchcodec_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode="RGB")
            return frames[0] if frames.ndim == 4 else frames  # (T, 3, H, W) for an animated image
        except (ValueError, RuntimeError):  # a format TorchCodec does not read, or data it rejects
            pass
    with PIL.Image.open(io.BytesIO(data)) as opened:
        image = PIL.ImageOps.exif_transpose(opened)  # as TorchCodec applies the EXIF orientation
        return torch.from_numpy(rgb_uint8_array(image)).permute(2, 0, 1)  # (H, W, 3) -> (3, H, W)


def rgb_uint8_array(image: PIL.Image.Image) -> np.ndarray:
    """A PIL image -> (H, W, 3) uint8 RGB; 16-bit modes scaled by round(value / 257), as TorchCodec does (mode
    "I" only where a value exceeds 255: PIL also uses it for 8-bit values)."""
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image).astype(np.int64)
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(
                f"expected a 16-bit image (values in [0, 65535]) in PIL mode {image.mode!r}, got values in "
                f"[{values.min()}, {values.max()}]"
            )
        if image.mode == "I" and values.max() <= 255:  # 32-bit integer mode holding 8-bit values
            gray = values.astype(np.uint8)
        else:
            gray = ((values + 128) // 257).astype(np.uint8)  # round(value / 257), exactly, in integers
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "F":
        return np.repeat(_float_to_uint8(np.asarray(image))[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> round(255 x value); floats in [0, 255] -> rounded; anything else refused."""
    if values.size == 0:
        return values.astype(np.uint8)
    low, high = float(np.nanmin(values)), float(np.nanmax(values))
    if not np.isfinite(values).all():
        raise ValueError("expected an image of finite values, got NaN or infinity")
    if low >= 0 and high <= 1:
        return np.rint(values * 255).astype(np.uint8)
    if low >= 0 and high <= 255:
        return np.rint(values).astype(np.uint8)
    raise ValueError(
        f"expected a float image with values in [0, 1] (or [0, 255]), got values in [{low:.4g}, {high:.4g}]; "
        "pass the image before normalisation"
    )


def to_8_bit(image):
    """One input image -> the same kind of image with 8 bits per channel, or the image unchanged.

    PIL: 16-bit and float modes -> an RGB PIL image. NumPy arrays and torch tensors: uint16, and other integers
    above 255, -> round(value / 257) as uint8; other integers as they are; floats -> uint8 (see
    `_float_to_uint8`); 2-D -> (H, W, 3).
    """
    if isinstance(image, PIL.Image.Image):
        if image.mode in SIXTEEN_BIT_MODES or image.mode == "F":
            return PIL.Image.fromarray(rgb_uint8_array(image))
        return image
    is_tensor = isinstance(image, torch.Tensor)
    if not is_tensor and not isinstance(image, np.ndarray):
        return image
    if is_tensor and image.dtype in (torch.bfloat16, torch.float16):  # NumPy has no bfloat16
        image = image.float()
    values = image.detach().cpu().numpy() if is_tensor else image
    if values.dtype == np.uint8 and values.ndim != 2:
        return image
    if values.dtype.kind == "f":
        values = _float_to_uint8(values.astype(np.float64))
    elif values.dtype.kind in "iu" and values.dtype != np.uint8:
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(
                f"expected an integer image with values in [0, 255] or [0, 65535], got values in "
                f"[{values.min()}, {values.max()}]"
            )
        if values.dtype == np.uint16 or (values.size and values.max() > 255):  # 16 bits
            values = ((values.astype(np.int64) + 128) // 257).astype(np.uint8)
        else:
            values = values.astype(np.uint8)
    elif values.dtype == np.bool_:
        raise ValueError("expected an image of numbers, got a boolean array")
    if values.ndim == 2:  # (H, W) grayscale -> (H, W, 3)
        values = np.repeat(values[..., None], 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(values)) if is_tensor else values


class SwinTinyImageProcessor(ViTImageProcessor):
    """`ViTImageProcessor` that first brings 16-bit, float and 2-D inputs to 8-bit RGB (see the module docstring)."""

    def preprocess(self, images, *args, **kwargs):
        if isinstance(images, (list, tuple)):
            images = [
                [to_8_bit(i) for i in image] if isinstance(image, (list, tuple)) else to_8_bit(image)
                for image in images
            ]
        else:
            images = to_8_bit(images)
        return super().preprocess(images, *args, **kwargs)


SwinTinyImageProcessor.register_for_auto_class("AutoImageProcessor")

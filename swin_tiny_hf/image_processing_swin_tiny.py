"""The image processor that ships with every saved model, and the one decoder that training and inference share.

`SwinTinyImageProcessor` is transformers' `ViTImageProcessor`: every option (`do_resize`, `size`, `resample`,
`do_rescale`, `rescale_factor`, `do_normalize`, `image_mean`, `image_std`, `do_convert_rgb`, `do_center_crop`,
`input_data_format`, `return_tensors`, ...) does what it does there, at call time and in the saved config. It
differs only where the stock processor gives a wrong image or none, and then gives what training sees:
- with `do_convert_rgb`, transparency (RGBA, LA, PA, a palette or RGB/L image with a transparent colour, 4-channel
  arrays and tensors) is dropped and the stored colour kept, as the training decoder (TorchCodec, PIL's
  `convert("RGB")`) and transformers' own `load_image` do; the stock processor alone composites onto white;
- with `do_convert_rgb`, 16-bit PIL images (modes "I;16", "I") become round(value / 257), where the stock
  conversion clips them, and float ones (mode "F") round(255 x value) from [0, 1] or their values rounded from
  [0, 255] (other values are refused);
- with `do_rescale`, arrays and tensors that do not hold 8-bit values are brought to 8 bits before the
  `rescale_factor` applies: uint16 (and other integers above 255) become round(value / 257); floats with every
  value in [0, 1] are taken as images already rescaled (ToTensor's) and become round(255 x value); floats in
  [0, 255] are left as they are; negative or larger values (a normalised image, say), non-finite values and
  booleans are refused with a ValueError naming the range found. So are 16-bit and float PIL images read without
  `do_convert_rgb` (as their (H, W) values, as the stock processor reads them). Without `do_rescale`, values are
  left alone;
- 2-D arrays and tensors are grayscale images, alone or in a list (the stock processor reads them only inside a
  nested list); a 4-D array is a batch, as there;
- a file path is decoded by `decode_image_bytes`, the training decoder (an animated image gives its first frame;
  a file that cannot be read is named); URLs and base64 strings are fetched as the stock processor does.

`make_image_processor` builds the processor of a new model (Tiny ImageNet's statistics by default).

`decode_image_bytes` is the training data's decoder (TorchCodec, PIL for other formats, the first frame of
an animated image, EXIF orientation applied); the pipeline of a saved model decodes files with it too.

This file is copied beside the weights by `save_pretrained` (remote code): it imports nothing of this package.
"""

from __future__ import annotations

import io
import logging
import os

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from transformers import ViTImageProcessor
from transformers.image_utils import ChannelDimension, infer_channel_dimension_format, is_valid_image

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
    animated image gives its first frame, as PIL (and so transformers' `load_image`) does. Transparency is
    dropped and the stored colour kept, by TorchCodec (which decodes to RGB) and PIL (`convert("RGB")`) alike.
    Raises ValueError for empty data, and whatever the decoders raise for data they cannot read.
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


def read_image_file(path: str | os.PathLike) -> torch.Tensor:
    """A local image file -> (3, H, W) uint8 RGB, by `decode_image_bytes`; a failure names the file."""
    try:
        with open(path, "rb") as file:
            return decode_image_bytes(file.read())
    except Exception as error:
        raise ValueError(f"could not read the image {os.fspath(path)!r}: {error}") from error


def rgb_uint8_array(image: PIL.Image.Image) -> np.ndarray:
    """A PIL image -> (H, W, 3) uint8 RGB; 16-bit modes scaled by round(value / 257), as TorchCodec does (mode
    "I" only where a value exceeds 255: PIL also uses it for 8-bit values); float mode "F" as `_float_to_uint8`;
    every other mode by `convert("RGB")`, which drops transparency and keeps the stored colour."""
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
    return np.array(image.convert("RGB"))  # writable: PIL's buffer is read-only, and tensors are made from it


def _float_range(values: np.ndarray) -> tuple[float, float]:
    if not np.isfinite(values).all():
        raise ValueError("expected an image of finite values, got NaN or infinity")
    return float(values.min()), float(values.max())


def _out_of_range(low: float, high: float, hint: str = "") -> ValueError:
    return ValueError(
        f"expected a float image with values in [0, 1] (or [0, 255]), got values in [{low:.4g}, {high:.4g}]; "
        f"pass the image before normalisation{hint}"
    )


def _float_to_uint8(values: np.ndarray) -> np.ndarray:
    """Floats in [0, 1] -> round(255 x value); floats in [0, 255] -> rounded; anything else refused."""
    if values.size == 0:
        return values.astype(np.uint8)
    low, high = _float_range(values)
    if low >= 0 and high <= 1:
        return np.rint(values * 255).astype(np.uint8)
    if low >= 0 and high <= 255:
        return np.rint(values).astype(np.uint8)
    raise _out_of_range(low, high)


def to_8_bit(image):
    """An array or tensor image (or batch) -> the same kind with 8-bit values where it holds other values.

    uint16, and other integers above 255 -> round(value / 257) as uint8; floats with every value in [0, 1] ->
    round(255 x value) as uint8; integers in [0, 255] and floats in [0, 255] unchanged (the same object), as is
    anything that is not an array or tensor. Negative or larger values, non-finite floats and booleans raise
    ValueError. The shape is kept. This is what `SwinTinyImageProcessor` does before `do_rescale`.
    """
    is_tensor = isinstance(image, torch.Tensor)
    if not is_tensor and not isinstance(image, np.ndarray):
        return image
    values = image.detach().cpu() if is_tensor else image
    if is_tensor and values.dtype in (torch.bfloat16, torch.float16):  # NumPy has no bfloat16
        values = values.float()
    values = values.numpy() if is_tensor else values
    if values.dtype == np.uint8 or values.size == 0:
        return image
    if values.dtype == np.bool_:
        raise ValueError("expected an image of numbers, got a boolean array")
    if values.dtype.kind == "f":
        low, high = _float_range(values)
        if low < 0 or high > 255:
            raise _out_of_range(low, high, ", or do_rescale=False to take its values as they are")
        if high > 1:  # [0, 255]: what the rescale expects
            return image
        values = np.rint(values.astype(np.float64) * 255).astype(np.uint8)
    elif values.dtype.kind in "iu":
        if values.min() < 0 or values.max() > 65535:
            raise ValueError(
                f"expected an integer image with values in [0, 255] or [0, 65535], got values in "
                f"[{values.min()}, {values.max()}]"
            )
        if values.dtype != np.uint16 and values.max() <= 255:  # 8-bit values in a wider integer type
            return image
        values = ((values.astype(np.int64) + 128) // 257).astype(np.uint8)  # round(value / 257), exactly
    else:
        raise ValueError(f"expected an image of integers or floats, got dtype {values.dtype}")
    return torch.from_numpy(values).to(image.device) if is_tensor else values


def _is_two_dimensional(image) -> bool:
    return isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 2


class SwinTinyImageProcessor(ViTImageProcessor):
    """`ViTImageProcessor`, with every option as there, that gives training's pixels for transparent, 16-bit,
    float and 2-D inputs and decodes files with the training decoder (see the module docstring)."""

    def fetch_images(self, image_url_or_urls):
        """Local files by the training decoder (named when unreadable); URLs and base64 as the stock processor
        does, an animated image's first frame only."""
        if isinstance(image_url_or_urls, str):
            if os.path.isfile(image_url_or_urls):
                return read_image_file(image_url_or_urls)
            fetched = super().fetch_images(image_url_or_urls)
            return fetched[0] if fetched.ndim == 4 else fetched  # (T, 3, H, W) -> the first frame
        return super().fetch_images(image_url_or_urls)

    def _preprocess_image_like_inputs(self, images, *args, **kwargs):
        # kwargs are the resolved options: call-time values over the saved ones (None counts as given, as in
        # ViTImageProcessor). Judged per input, so a 4-D batch is one range, as it is one array.
        def as_training_sees(image):
            if isinstance(image, (list, tuple)):
                return [as_training_sees(item) for item in image]
            return self._training_pixels(image, kwargs.get("do_rescale"), kwargs.get("do_convert_rgb"))

        return super()._preprocess_image_like_inputs(as_training_sees(images), *args, **kwargs)

    @staticmethod
    def _training_pixels(image, do_rescale, do_convert_rgb):
        if isinstance(image, PIL.Image.Image):
            if do_convert_rgb:
                if image.mode == "RGB" and "transparency" not in image.info:
                    return image
                # training's conversion; a fresh image, so that no transparency info is left to composite with
                return PIL.Image.fromarray(rgb_uint8_array(image))
            if do_rescale and (image.mode in SIXTEEN_BIT_MODES or image.mode == "F"):
                return to_8_bit(np.array(image))  # (H, W), as the stock processor reads the image (a copy)
            return image
        return to_8_bit(image) if do_rescale else image

    def _prepare_images_structure(self, images, expected_ndims: int = 3):
        images = self.fetch_images(images)
        if _is_two_dimensional(images):  # one (H, W) grayscale image
            return [images]
        if (
            isinstance(images, (list, tuple))
            and any(_is_two_dimensional(image) for image in images)
            and all(
                is_valid_image(image) and (isinstance(image, PIL.Image.Image) or image.ndim in (2, expected_ndims))
                for image in images
            )
        ):  # a list of images, some (H, W): each is an image (ViT's process_image reads (H, W) as one channel)
            return list(images)
        return super()._prepare_images_structure(images, expected_ndims=expected_ndims)

    def convert_to_rgb(self, image: torch.Tensor, input_data_format=None) -> torch.Tensor:
        """As ViTImageProcessor's (1 channel -> 3), but 4 channels drop alpha and keep the stored colour, as the
        training decoder does (transformers' own composites onto white)."""
        if image.ndim >= 3:
            if input_data_format is None:
                input_data_format = infer_channel_dimension_format(image, num_channels=(1, 3, 4))
            channel_axis = -1 if input_data_format == ChannelDimension.LAST else -3
            if image.shape[channel_axis] == 4:
                return image.narrow(channel_axis, 0, 3)
        return super().convert_to_rgb(image, input_data_format=input_data_format)


SwinTinyImageProcessor.register_for_auto_class("AutoImageProcessor")

# Channel statistics: Tiny ImageNet's (the reference design's), the default of a new model; ImageNet's, those of
# the published checkpoints that `convert.py` converts.
TINY_IMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINY_IMAGENET_STD = (0.2296, 0.2263, 0.2255)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_image_processor(
    image_size: int = 64,
    mean: tuple[float, float, float] = TINY_IMAGENET_MEAN,
    std: tuple[float, float, float] = TINY_IMAGENET_STD,
) -> SwinTinyImageProcessor:
    """The processor of a new model: resize to image_size x image_size (bilinear), rescale to [0, 1], normalise
    by `mean` and `std` (Tiny ImageNet's by default)."""
    if image_size <= 0:
        raise ValueError(f"image_size must be positive, got {image_size}.")
    return SwinTinyImageProcessor(
        do_resize=True,
        size={"height": image_size, "width": image_size},
        resample=2,  # PIL.Image.BILINEAR
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=list(mean),
        image_std=list(std),
        do_convert_rgb=True,
    )

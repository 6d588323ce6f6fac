"""SwinTinyImageProcessor against transformers' own ViTImageProcessor: the same inputs and the same options through
both, drawn with hypothesis.

Every option (do_resize, size, resample, do_rescale, rescale_factor, do_normalize, image_mean, image_std,
do_convert_rgb, do_center_crop, input_data_format, return_tensors), in the saved config or at call time, must
act as it does in ViTImageProcessor. Where ours is documented to differ (transparency, 16-bit, floats in [0, 1]
with do_rescale, 2-D arrays), the difference is asserted exactly: ours(x) == ViT(documented(x)), where
`documented` below is the rule of the processor's docstring written out with NumPy and PIL, and ViT reads a
2-D image inside a nested list, the one place where it reads one. Anything that raises in one raises the same
in the other, but for the documented refusals (a normalised float image or a boolean array with do_rescale).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import PIL.Image
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoImageProcessor, ViTImageProcessor

from swin_tiny_hf import SwinTinyImageProcessor, make_image_processor

# our saved config (make_image_processor), the starting point of every drawn one
SAVED = {k: v for k, v in make_image_processor(8).to_dict().items() if k != "image_processor_type"}

SETTINGS = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


class Refused(Exception):
    """The documented refusals: ours raises ValueError where ViT would rescale values that are no image's."""


# ----------------------------------------------------------------------------------------------- the inputs


@dataclasses.dataclass
class Drawn:
    """One image as a user passes it, and what the test knows of it."""

    image: object  # PIL image, np.ndarray or torch.Tensor
    layout: str | None = None  # "first" / "last" for arrays and tensors of 3 (or 4, a batch) dimensions

    @property
    def is_pil(self) -> bool:
        return isinstance(self.image, PIL.Image.Image)


PIL_KINDS = (
    "RGB", "L", "P", "1", "CMYK",  # 8 bits, opaque: no difference
    "RGBA", "LA", "P+transparency", "RGB+transparency", "L+transparency",  # transparent
    "I;16", "I 16-bit", "I 8-bit", "F [0, 1]", "F [0, 255]", "F normalised",  # 16-bit, 32-bit, float
)  # fmt: skip
ARRAY_KINDS = (
    "uint8", "int32 8-bit", "uint16", "int64 16-bit", "float32 [0, 1]", "float64 [0, 1]", "float32 [0, 255]",
    "float32 normalised", "bool",
)  # fmt: skip
TENSOR_ONLY_KINDS = ("float16 [0, 1]", "bfloat16 [0, 1]")


def array_values(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if kind == "uint8":
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if kind == "int32 8-bit":
        return rng.integers(0, 256, shape).astype(np.int32)
    if kind == "uint16":
        return rng.integers(0, 65536, shape).astype(np.uint16)
    if kind == "int64 16-bit":
        values = rng.integers(0, 65536, shape).astype(np.int64)
        values.flat[0] = 40000  # above 255 somewhere: 16 bits
        return values
    if kind.endswith("[0, 1]"):
        return rng.random(shape)
    if kind == "float32 [0, 255]":
        values = rng.random(shape) * 255
        values.flat[0] = 200.5  # above 1 somewhere
        return values.astype(np.float32)
    if kind == "float32 normalised":
        return ((rng.random(shape) - 0.45) / 0.22).astype(np.float32)
    if kind == "bool":
        return rng.random(shape) > 0.5
    raise AssertionError(kind)


def pil_image(kind: str, height: int, width: int, rng: np.random.Generator) -> PIL.Image.Image:
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[0, 0] = (0, 0, 0, 0)  # a transparent black pixel
    rgba[0, 1] = (250, 20, 60, 0)  # a transparent coloured one
    rgb, gray = rgba[..., :3], rgba[..., 0]
    if kind in ("RGB", "RGB+transparency"):
        image = PIL.Image.fromarray(np.ascontiguousarray(rgb))
        if kind == "RGB+transparency":
            image.info["transparency"] = tuple(int(v) for v in rgb[0, 0])
        return image
    if kind in ("L", "L+transparency"):
        image = PIL.Image.fromarray(np.ascontiguousarray(gray))
        if kind == "L+transparency":
            image.info["transparency"] = int(gray[0, 0])
        return image
    if kind in ("P", "P+transparency"):
        image = PIL.Image.fromarray(np.ascontiguousarray(rgb)).convert("P")
        if kind == "P+transparency":
            image.info["transparency"] = int(np.asarray(image)[0, 0])
        return image
    if kind == "1":
        return PIL.Image.fromarray(np.ascontiguousarray(gray)).convert("1")
    if kind in ("CMYK", "RGBA"):
        return PIL.Image.frombytes(kind, (width, height), rgba.tobytes())
    if kind == "LA":
        return PIL.Image.frombytes("LA", (width, height), np.ascontiguousarray(rgba[..., [0, 3]]).tobytes())
    if kind == "I;16":
        return PIL.Image.fromarray(rng.integers(0, 65536, (height, width)).astype(np.uint16))
    if kind == "I 16-bit":
        values = rng.integers(0, 65536, (height, width)).astype(np.int32)
        values[0, 0] = 40000
        return PIL.Image.fromarray(values)
    if kind == "I 8-bit":
        return PIL.Image.fromarray(gray.astype(np.int32))
    if kind.startswith("F"):
        values = {"F [0, 1]": "float32 [0, 1]", "F [0, 255]": "float32 [0, 255]"}.get(kind, "float32 normalised")
        return PIL.Image.fromarray(array_values(values, (height, width), rng).astype(np.float32))
    raise AssertionError(kind)


@st.composite
def single_images(draw, allow_two_dimensional: bool = True) -> Drawn:
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    height, width = draw(st.integers(5, 11)), draw(st.integers(5, 11))
    container = draw(st.sampled_from(("PIL", "numpy", "torch")))
    if container == "PIL":
        return Drawn(pil_image(draw(st.sampled_from(PIL_KINDS)), height, width, rng))
    kinds = ARRAY_KINDS + (TENSOR_ONLY_KINDS if container == "torch" else ())
    kind = draw(st.sampled_from(kinds))
    channels = draw(st.sampled_from((1, 3, 4, 0) if allow_two_dimensional else (1, 3, 4)))  # 0: (H, W)
    layout = None if channels == 0 else draw(st.sampled_from(("first", "last")))
    if channels == 0:
        shape = (height, width)
    else:
        shape = (channels, height, width) if layout == "first" else (height, width, channels)
    values = array_values(kind, shape, rng)
    if container == "numpy":
        return Drawn(values, layout)
    if kind in TENSOR_ONLY_KINDS:
        return Drawn(torch.from_numpy(values).to(getattr(torch, kind.split()[0])), layout)
    return Drawn(torch.from_numpy(np.ascontiguousarray(values)), layout)


@st.composite
def batches(draw) -> Drawn:
    """(N, H, W, C) or (N, C, H, W): one array of one range; ours judges the range on the whole batch."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(ARRAY_KINDS))
    layout = draw(st.sampled_from(("first", "last")))
    count, height, width = draw(st.integers(1, 3)), draw(st.integers(5, 9)), draw(st.integers(5, 9))
    channels = draw(st.sampled_from((1, 3, 4)))
    shape = (count, channels, height, width) if layout == "first" else (count, height, width, channels)
    values = array_values(kind, shape, rng)
    return Drawn(torch.from_numpy(values) if draw(st.booleans()) else values, layout)


# ------------------------------------------------------------------------------------------ the documented rule


def _like(original, values: np.ndarray):
    return torch.from_numpy(values) if isinstance(original, torch.Tensor) else values


def documented_values(image, do_rescale):
    """With do_rescale: 16-bit -> round(v / 257) uint8, floats in [0, 1] -> round(255 v) uint8, the rest of
    [0, 255] unchanged, anything else refused. Without: unchanged."""
    if not do_rescale:
        return image
    if image.dtype in (np.bool_, torch.bool):
        raise Refused
    values = image.float().numpy() if image.dtype in (torch.float16, torch.bfloat16) else np.asarray(image)
    if values.dtype.kind == "f":
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 255:
            raise Refused
        return _like(image, np.rint(values.astype(np.float64) * 255).astype(np.uint8)) if values.max() <= 1 else image
    if values.dtype == np.uint16 or values.max() > 255:
        return _like(image, ((values.astype(np.int64) + 128) // 257).astype(np.uint8))
    return image


def drop_alpha(image, layout: str | None):
    """4 channels -> the first 3 (the stored colour), on the channel axis of `layout`."""
    if layout is None or image.ndim < 3:
        return image
    axis = -1 if layout == "last" else -3
    if image.shape[axis] != 4:
        return image
    return image[..., :3] if layout == "last" else image[..., :3, :, :]


def documented_pil(image: PIL.Image.Image, do_rescale, do_convert_rgb):
    if do_convert_rgb:  # training's conversion to 8-bit RGB
        if image.mode in ("I;16", "I"):
            values = np.asarray(image).astype(np.int64)
            eight = values if image.mode == "I" and values.max() <= 255 else (values + 128) // 257
            return PIL.Image.fromarray(eight.astype(np.uint8))
        if image.mode == "F":
            values = np.asarray(image).astype(np.float64)
            if values.min() < 0 or values.max() > 255:
                raise Refused
            return PIL.Image.fromarray(np.rint(values * 255 if values.max() <= 1 else values).astype(np.uint8))
        if "A" in image.getbands() or "transparency" in image.info:  # stored colour, alpha dropped
            return PIL.Image.fromarray(np.asarray(image.convert("RGB")))
        return image
    if image.mode in ("I;16", "I", "F"):  # ViT reads these as their (H, W) values
        values = documented_values(np.asarray(image), do_rescale)
        return PIL.Image.fromarray(values) if values.dtype == np.uint8 else image
    return image


def documented(drawn: Drawn, do_rescale, do_convert_rgb):
    """What ViT must be given to produce ours: the image itself, or its documented conversion."""
    if drawn.is_pil:
        return documented_pil(drawn.image, do_rescale, do_convert_rgb)
    image = documented_values(drawn.image, do_rescale)
    if do_convert_rgb:
        image = drop_alpha(image, drawn.layout)
    return [[image]] if image.ndim == 2 else image  # ViT reads (H, W) inside a nested list only


# ------------------------------------------------------------------------------------------------ the options

OPTIONS = {
    "do_resize": st.sampled_from((True, False)),
    "size": st.sampled_from(({"height": 8, "width": 8}, {"height": 6, "width": 9}, {"shortest_edge": 7})),
    "resample": st.sampled_from((0, 2, 3)),  # nearest, bilinear, bicubic (PILImageResampling)
    "do_rescale": st.sampled_from((True, False, None)),
    "rescale_factor": st.sampled_from((1 / 255, 1 / 127.5, 0.5)),
    "do_normalize": st.sampled_from((True, False)),
    "image_mean": st.sampled_from(((0.5, 0.5, 0.5), (0.4802, 0.4481, 0.3975), 0.25)),
    "image_std": st.sampled_from(((0.5, 0.5, 0.5), (0.2296, 0.2263, 0.2255), 2.0)),
    "do_convert_rgb": st.sampled_from((True, False, None)),
    "do_center_crop": st.sampled_from((True, False)),
    "crop_size": st.sampled_from(({"height": 5, "width": 5}, {"height": 7, "width": 6})),
}


@st.composite
def options(draw) -> tuple[dict, dict]:
    """(saved config, call-time options): each drawn option goes into one of them, or neither."""
    saved, call = dict(SAVED), {}
    for name, values in OPTIONS.items():
        where = draw(st.sampled_from(("saved", "call", "neither")))
        if where != "neither":
            value = draw(values)
            if value is None and where == "saved":
                continue  # None in a saved config means "the class default" in both
            (saved if where == "saved" else call)[name] = value
    call["return_tensors"] = draw(st.sampled_from(("pt", "np", None)))
    return saved, call


def resolved(name: str, saved: dict, call: dict):
    """The value an option takes: call time over the saved config (None counts as given, as in ViT)."""
    return call[name] if name in call else saved.get(name)


def run(processor, images, call: dict):
    try:
        return processor(images, **call)["pixel_values"]
    except Exception as error:  # compared by type and message
        return error


def assert_same(ours, theirs):
    if isinstance(theirs, Exception):
        assert isinstance(ours, Exception), f"ViT raised {theirs!r}, ours gave {type(ours)}"
        assert (type(ours), str(ours)) == (type(theirs), str(theirs))
        return
    assert not isinstance(ours, Exception), f"ours raised {ours!r}, ViT did not"
    if isinstance(theirs, list):  # return_tensors=None: a list of (C, H, W) tensors
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(theirs, np.ndarray):
        assert isinstance(ours, np.ndarray) and ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
    else:
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs)


def both(saved: dict):
    return SwinTinyImageProcessor.from_dict(saved), ViTImageProcessor.from_dict(saved)


def check(inputs, references, saved: dict, call: dict):
    """ours(inputs) == ViT(references), or ours refuses where the rule says it must."""
    ours, vit = both(saved)
    if isinstance(references, Refused):  # ours refuses, unless an option is refused first (as ViT refuses it)
        result = run(ours, inputs, call)
        assert isinstance(result, ValueError), result
        assert str(result).startswith("expected a") or str(result) == str(run(vit, inputs, call)), result
        return
    assert_same(run(ours, inputs, call), run(vit, references, call))


def reference_or_refusal(drawn: Drawn, saved: dict, call: dict):
    try:
        return documented(drawn, resolved("do_rescale", saved, call), resolved("do_convert_rgb", saved, call))
    except Refused as refusal:
        return refusal


# --------------------------------------------------------------------------------------------------- the tests


@SETTINGS
@given(single_images(), options(), st.booleans())
def test_one_image_any_option_acts_as_in_vit(drawn, drawn_options, give_layout):
    saved, call = drawn_options
    if give_layout and drawn.layout is not None:
        call["input_data_format"] = "channels_first" if drawn.layout == "first" else "channels_last"
    check(drawn.image, reference_or_refusal(drawn, saved, call), saved, call)


@SETTINGS
@given(st.lists(single_images(), min_size=1, max_size=4), options(), st.booleans())
def test_lists_and_nested_lists_act_as_in_vit(drawn_images, drawn_options, nested):
    """Each image of a list is judged alone (a list of 2-D arrays included, which ViT cannot read: it is given the
    references as a nested list, which it flattens and where it reads (H, W) images)."""
    saved, call = drawn_options
    references = [reference_or_refusal(drawn, saved, call) for drawn in drawn_images]
    images = [drawn.image for drawn in drawn_images]
    if nested:  # [[a, b], [c, d]]: transformers flattens it
        images = [group for group in (images[:2], images[2:]) if group]
    if any(isinstance(reference, Refused) for reference in references):
        check(images, Refused(), saved, call)
        return
    references = [reference[0][0] if isinstance(reference, list) else reference for reference in references]
    grouped = [group for group in (references[:2], references[2:]) if group] if nested else [[r] for r in references]
    check(images, grouped, saved, call)


@SETTINGS
@given(batches(), options(), st.booleans())
def test_batches_act_as_in_vit(drawn, drawn_options, give_layout):
    saved, call = drawn_options
    if give_layout:
        call["input_data_format"] = "channels_first" if drawn.layout == "first" else "channels_last"
    check(drawn.image, reference_or_refusal(drawn, saved, call), saved, call)


@SETTINGS
@given(single_images(allow_two_dimensional=False), options())
def test_an_option_in_the_saved_config_acts_as_at_call_time(drawn, drawn_options):
    saved, call = drawn_options
    moved = {**saved, **{k: v for k, v in call.items() if k != "return_tensors" and v is not None}}
    kept = {k: v for k, v in call.items() if k == "return_tensors" or v is None}
    ours_at_call = run(SwinTinyImageProcessor.from_dict(saved), drawn.image, call)
    ours_saved = run(SwinTinyImageProcessor.from_dict(moved), drawn.image, kept)
    assert_same(ours_saved, ours_at_call)


# ---------------------------------------------------------------- named cases: the figures and siblings

FLOAT_IMAGE = torch.rand(3, 40, 48, generator=torch.Generator().manual_seed(0))  # (3, H, W) in [0, 1]
LOW = (0 - 0.4802) / 0.2296  # -2.09: black, channel 0, with the Tiny ImageNet statistics
HIGH = (1 - 0.3975) / 0.2255  # 2.67: white, channel 2


def test_do_rescale_false_takes_float_values_as_they_are_at_call_time_and_when_saved(tmp_path):
    """Issue 21, item 1: a [0, 1] float image with do_rescale=False came out in [-2.09, 1129]; ViT's is [-2.09,
    2.67]. Now ours is ViT's, at call time and from a saved config (save_pretrained, AutoImageProcessor)."""
    ours, vit = both(SAVED)
    theirs = vit(FLOAT_IMAGE, do_rescale=False, return_tensors="pt")["pixel_values"]
    assert LOW <= theirs.min() and theirs.max() <= HIGH + 1e-6
    assert torch.equal(ours(FLOAT_IMAGE, do_rescale=False, return_tensors="pt")["pixel_values"], theirs)
    make_image_processor(8).save_pretrained(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(
        (tmp_path / "preprocessor_config.json").read_text().replace('"do_rescale": true', '"do_rescale": false')
    )
    loaded = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(loaded) is SwinTinyImageProcessor and loaded.do_rescale is False
    assert torch.equal(loaded(FLOAT_IMAGE, return_tensors="pt")["pixel_values"], theirs)
    # with do_rescale (the default), the documented difference: [0, 1] is read as a rescaled image
    rescaled = ours(FLOAT_IMAGE, return_tensors="pt")["pixel_values"]
    eight_bit = (FLOAT_IMAGE * 255).round().to(torch.uint8)
    assert torch.equal(rescaled, vit(eight_bit, return_tensors="pt")["pixel_values"])
    assert not torch.allclose(rescaled, vit(FLOAT_IMAGE, return_tensors="pt")["pixel_values"], atol=0.5)


SIBLINGS = {
    "do_resize": {"do_resize": False},
    "do_normalize": {"do_normalize": False},
    "do_convert_rgb": {"do_convert_rgb": False},
    "size": {"size": {"height": 12, "width": 20}},
    "size shortest_edge": {"size": {"shortest_edge": 10}},
    "resample": {"resample": 0},
    "rescale_factor": {"rescale_factor": 1 / 127.5},
    "image_mean/std": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]},
    "do_center_crop": {"do_center_crop": True, "crop_size": {"height": 6, "width": 6}},
    "input_data_format": {"input_data_format": "channels_first"},
}
SIBLING_INPUTS = {
    "uint8 tensor": (FLOAT_IMAGE * 255).round().to(torch.uint8),
    "uint8 array (H, W, 3)": (FLOAT_IMAGE * 255).round().to(torch.uint8).permute(1, 2, 0).numpy(),
    "float [0, 255]": FLOAT_IMAGE * 255,
    "PIL RGB": PIL.Image.fromarray((FLOAT_IMAGE * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()),
}


@pytest.mark.parametrize("option", SIBLINGS)
@pytest.mark.parametrize("kind", SIBLING_INPUTS)
def test_each_option_at_call_time_is_vits(option, kind):
    ours, vit = both(SAVED)
    call = dict(SIBLINGS[option], return_tensors="pt")
    if kind.startswith("PIL") or "(H, W, 3)" in kind:
        call.pop("input_data_format", None)
    assert_same(run(ours, SIBLING_INPUTS[kind], call), run(vit, SIBLING_INPUTS[kind], call))

"""Odd inputs at inference: transparent, 16-bit, float and 2-D images, animated GIFs and unreadable files, through
the saved model's own processor, transformers' pipeline (the plain call) and the folder's own pipeline (task
"swin-tiny-image-classification"), against the training decoder. Each comparison has a control: what
transformers' stock ViT processor and pipeline do with it. tests/test_image_processor_options.py holds the
option-by-option comparison with ViTImageProcessor."""

import builtins
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ImageClassificationPipeline, ViTImageProcessor, pipeline

from swin_tiny_hf import SwinTinyForImageClassification, SwinTinyImageProcessor, save_model_and_processor
from swin_tiny_hf.image_processing_swin_tiny import _torchcodec_decode, decode_image_bytes, rgb_uint8_array, to_8_bit
from swin_tiny_hf.pipeline_swin_tiny import TASK, SwinTinyImageClassificationPipeline
from swin_tiny_hf.training.data import decode_rgb

from conftest import perturbed, run_without_the_package, tiny_config

LABELS = {0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("inference") / "model"
    torch.manual_seed(0)
    model = perturbed(SwinTinyForImageClassification(tiny_config(id2label=LABELS)), 0.3)
    save_model_and_processor(model, folder)
    return model, folder


@pytest.fixture
def no_prompt(monkeypatch):
    """Fails the test if transformers asks on the terminal whether to run remote code (it swallows the error of
    an unanswered prompt where a component is optional, so only the question itself shows it)."""
    asked = []
    monkeypatch.setattr(builtins, "input", lambda prompt="": asked.append(prompt) or "n")
    yield
    assert not asked, asked


def plain_pipeline(folder):
    """The plain call: transformers' pipeline, the folder's processor, no trust_remote_code (the package is
    installed)."""
    return pipeline("image-classification", model=str(folder), top_k=5)


def own_pipeline(folder):
    """The folder's own pipeline (training's file decoder), without remote code where the package is installed."""
    return pipeline(
        "image-classification", model=str(folder), pipeline_class=SwinTinyImageClassificationPipeline, top_k=5
    )


def sixteen_bit_png(folder) -> tuple[str, np.ndarray]:
    """A 16-bit grayscale PNG of a gradient (PIL mode I;16) and its values."""
    values = (np.linspace(0, 65535, 40 * 56).reshape(40, 56)).astype(np.uint16)
    path = folder / "sixteen.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    return str(path), values


def logits_of(model, processor, image) -> torch.Tensor:
    with torch.no_grad():
        return model(processor(image, return_tensors="pt")["pixel_values"]).logits[0]


def scores_of(classify, image) -> list[float]:
    scores = {p["label"]: p["score"] for p in classify(image)}
    return [scores[label] for label in LABELS.values()]


def stock_processor(processor: SwinTinyImageProcessor) -> ViTImageProcessor:
    return ViTImageProcessor(**{k: v for k, v in processor.to_dict().items() if k != "image_processor_type"})


def test_sixteen_bit_images_are_seen_as_training_decodes_them(saved, tmp_path, no_prompt):
    model, folder = saved
    path, values = sixteen_bit_png(tmp_path)
    processor = SwinTinyImageProcessor.from_pretrained(folder)
    # what training sees: the training decoder's 8 bits (round(v / 257))
    decoded = decode_rgb({"bytes": open(path, "rb").read(), "path": None}, "train", 0)
    eight_bit = ((values.astype(np.int64) + 128) // 257).astype(np.uint8)
    assert torch.equal(decoded, torch.from_numpy(eight_bit)[None].expand(3, -1, -1))
    expected = logits_of(model, processor, decoded)
    for image in (Image.open(path), values, torch.from_numpy(values.astype(np.int32)), path):
        torch.testing.assert_close(logits_of(model, processor, image), expected, rtol=0, atol=1e-6)
    probabilities = expected.softmax(-1).tolist()
    own = own_pipeline(folder)
    for image in (path, Image.open(path)):
        assert scores_of(own, image) == pytest.approx(probabilities, abs=1e-6)
    # the plain call: arrays reach the processor as they are; files and PIL images go through transformers'
    # load_image (convert("RGB")), which clips 16 bits to white nearly everywhere (README: use the own pipeline)
    plain = plain_pipeline(folder)
    assert scores_of(plain, values) == pytest.approx(probabilities, abs=1e-6)
    clipped = Image.open(path).convert("RGB")
    assert (np.asarray(clipped) == 255).mean() > 0.99
    clipped_probabilities = logits_of(model, processor, clipped).softmax(-1)
    for image in (path, Image.open(path)):
        assert scores_of(plain, image) == pytest.approx(clipped_probabilities.tolist(), abs=1e-6)
    assert not torch.allclose(clipped_probabilities, expected.softmax(-1), atol=1e-3)
    # control: transformers' stock processor clips the PIL image and divides uint16 arrays by 255
    stock = ImageClassificationPipeline(model=model, image_processor=stock_processor(processor), top_k=5)
    assert scores_of(stock, path) == pytest.approx(clipped_probabilities.tolist(), abs=1e-6)
    rgb_values = np.repeat(values[..., None], 3, axis=-1)  # (H, W, 3): the stock processor cannot read (H, W)
    assert scores_of(plain, rgb_values) == pytest.approx(probabilities, abs=1e-6)
    assert not np.allclose(scores_of(stock, rgb_values), probabilities, atol=1e-3)


def test_float_images_in_0_1_are_their_uint8_versions(saved):
    model, folder = saved
    processor = SwinTinyImageProcessor.from_pretrained(folder)
    stock = stock_processor(processor)
    rng = np.random.default_rng(0)
    uint8 = rng.integers(0, 256, (3, 48, 40), dtype=np.uint8)
    expected = logits_of(model, processor, torch.from_numpy(uint8))
    as_float = torch.from_numpy(uint8).float() / 255  # (3, H, W) in [0, 1], as ToTensor gives
    torch.testing.assert_close(logits_of(model, processor, as_float), expected, rtol=0, atol=0)
    hwc = np.ascontiguousarray(uint8.transpose(1, 2, 0)).astype(np.float32) / 255
    torch.testing.assert_close(logits_of(model, processor, hwc), expected, rtol=0, atol=0)
    batch = processor([as_float, torch.from_numpy(uint8)], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch[0], batch[1], rtol=0, atol=0)
    # floats in [0, 255] are what the rescale expects: exactly the stock processor's result
    as_255 = torch.from_numpy(uint8).double()
    ours = processor(as_255, return_tensors="pt")["pixel_values"]
    assert torch.equal(ours, stock(as_255, return_tensors="pt")["pixel_values"])
    # normalised floats are refused, naming the range
    with pytest.raises(ValueError, match=r"values in \[0, 1\] \(or \[0, 255\]\), got values in \[-"):
        processor((as_float - 0.5) / 0.25, return_tensors="pt")
    # without do_rescale the values are the user's: exactly the stock processor's result, normalised ones too
    for image in (as_float, (as_float - 0.5) / 0.25):
        ours = processor(image, do_rescale=False, return_tensors="pt")["pixel_values"]
        assert torch.equal(ours, stock(image, do_rescale=False, return_tensors="pt")["pixel_values"])
    # control: the stock processor rescales [0, 1] by 1/255 again
    with torch.no_grad():
        twice = model(stock(as_float, return_tensors="pt")["pixel_values"]).logits[0]
    assert not torch.allclose(twice, expected, atol=1e-2)


def test_two_dimensional_grayscale_arrays(saved, no_prompt):
    model, folder = saved
    processor = SwinTinyImageProcessor.from_pretrained(folder)
    gray = np.random.default_rng(1).integers(0, 256, (30, 50), dtype=np.uint8)
    expected = logits_of(model, processor, np.repeat(gray[..., None], 3, axis=-1))
    for image in (gray, torch.from_numpy(gray), Image.fromarray(gray, mode="L")):
        torch.testing.assert_close(logits_of(model, processor, image), expected, rtol=0, atol=1e-6)
    two = processor([gray, torch.from_numpy(gray)], return_tensors="pt")["pixel_values"]
    assert two.shape == (2, 3, 32, 32) and torch.equal(two[0], two[1])
    for classify in (plain_pipeline(folder), own_pipeline(folder)):
        assert classify(gray)[0]["label"] == LABELS[int(expected.argmax())]
    with pytest.raises(ValueError, match="Could not make a flat list of images"):  # control
        stock_processor(processor)(gray, return_tensors="pt")


def animated_gif() -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(2)
    frames = [Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).convert("P") for _ in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue(), np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_animated_gif_is_its_first_frame_in_training_and_inference(saved, tmp_path):
    model, folder = saved
    data, first_frame = animated_gif()
    assert Image.open(io.BytesIO(data)).n_frames == 3
    decoded = decode_image_bytes(data)
    assert torch.equal(decoded, torch.from_numpy(first_frame).permute(2, 0, 1))
    path = tmp_path / "animated.gif"
    path.write_bytes(data)
    processor = SwinTinyImageProcessor.from_pretrained(folder)
    expected = logits_of(model, processor, first_frame)
    torch.testing.assert_close(logits_of(model, processor, str(path)), expected, rtol=0, atol=0)
    for classify in (own_pipeline(folder), plain_pipeline(folder)):
        best = classify(str(path))[0]
        assert best["label"] == LABELS[int(expected.argmax())]
        assert best["score"] == pytest.approx(float(expected.softmax(-1).max()), abs=1e-6)
    if _torchcodec_decode is not None:  # control: the stock processor decodes every frame, three images
        assert stock_processor(processor)(str(path), return_tensors="pt")["pixel_values"].shape[0] == 3


def test_unreadable_file_in_a_list_is_named(saved, tmp_path):
    _, folder = saved
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20), (10, 200, 30)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    classify = own_pipeline(folder)
    assert classify([str(good)])[0][0]["label"] in LABELS.values()
    with pytest.raises(ValueError, match=r"could not read the image '.*truncated\.png'"):
        classify([str(good), str(truncated), str(good)])
    with pytest.raises(ValueError, match=r"could not read the image '.*empty\.jpg': the image has no bytes"):
        classify([str(empty)])
    with pytest.raises(ValueError, match=r"could not read the image 'no/such/file\.png'"):
        classify("no/such/file.png")
    processor = SwinTinyImageProcessor.from_pretrained(folder)  # the processor's own reading of paths
    with pytest.raises(ValueError, match=r"could not read the image '.*truncated\.png'"):
        processor([str(good), str(truncated)], return_tensors="pt")


def test_to_8_bit_leaves_8_bit_images_alone_and_refuses_what_it_cannot_read():
    image = Image.new("RGB", (4, 4))
    assert to_8_bit(image) is image
    for eight_bit in (np.zeros((4, 4, 3), np.uint8), np.full((4, 4), 255, np.int32), np.full((2, 2), 254.5)):
        assert to_8_bit(eight_bit) is eight_bit  # 8-bit values in any type: what the rescale expects
    dark = np.full((2, 2), 200, np.uint16)  # a dark 16-bit image stays 16-bit: 200 / 257 rounds to 1
    assert to_8_bit(dark).tolist() == [[1, 1], [1, 1]]
    assert to_8_bit(torch.full((2, 2), 0.5)).tolist() == [[128, 128], [128, 128]]  # round(127.5), shape kept
    with pytest.raises(ValueError, match="finite"):
        to_8_bit(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"values in \[0, 255\] or \[0, 65535\], got values in \[-3, 4\]"):
        to_8_bit(np.array([[-3, 4]], np.int32))
    with pytest.raises(ValueError, match="boolean"):
        to_8_bit(np.ones((2, 2), bool))


TRANSPARENT_KINDS = ("RGBA png", "LA png", "P+transparency png", "P+transparency gif", "RGB+tRNS png", "RGBA webp")


def transparent_file(kind: str, rng: np.random.Generator) -> bytes:
    """A 32 x 32 image (the processor's size: resizing leaves it as it is) whose first pixel is transparent
    black and whose second is transparent red, in the format `kind`."""
    rgba = rng.integers(0, 256, (32, 32, 4), dtype=np.uint8)
    rgba[0, 0], rgba[0, 1] = (0, 0, 0, 0), (250, 20, 60, 0)
    rgba[1:, :, 3] = rng.choice([0, 128, 255], (31, 32))
    buffer = io.BytesIO()
    if kind.startswith("RGBA"):
        options = {"lossless": True, "exact": True} if "webp" in kind else {}  # WebP: keep transparent colours
        Image.frombytes("RGBA", (32, 32), rgba.tobytes()).save(buffer, format=kind.split()[1].upper(), **options)
    elif kind.startswith("LA"):
        Image.frombytes("LA", (32, 32), np.ascontiguousarray(rgba[..., [0, 3]]).tobytes()).save(buffer, format="PNG")
    elif kind.startswith("P"):
        image = Image.fromarray(np.ascontiguousarray(rgba[..., :3])).convert("P")
        image.save(buffer, format=kind.split()[1].upper(), transparency=int(np.asarray(image)[0, 0]))
    else:  # an RGB PNG whose colour key (tRNS) is the first pixel's colour
        Image.fromarray(np.ascontiguousarray(rgba[..., :3])).save(buffer, format="PNG", transparency=(0, 0, 0))
    return buffer.getvalue()


@pytest.mark.parametrize("kind", TRANSPARENT_KINDS)
def test_transparent_images_keep_their_stored_colour_on_every_path(saved, tmp_path, kind, no_prompt):
    """Issue 21, item 2: one rule, training's. TorchCodec and PIL's convert("RGB") drop alpha and keep the stored
    colour; so do the processor (PIL image, 4-channel array, file path), the plain pipeline and the own one. A
    transparent black pixel is (0 - 0.4802) / 0.2296 = -2.09 everywhere (the stock processor: +2.26, white)."""
    model, folder = saved
    data = transparent_file(kind, np.random.default_rng(TRANSPARENT_KINDS.index(kind)))
    path = tmp_path / f"image.{kind.split()[1]}"
    path.write_bytes(data)
    opened = Image.open(io.BytesIO(data))
    assert "A" in opened.getbands() or "transparency" in opened.info, opened.mode
    stored = np.asarray(opened.convert("RGB"))  # PIL: the stored colour, alpha dropped
    trained = decode_rgb({"bytes": data, "path": None}, "train", 0)  # what training and evaluation see
    assert np.array_equal(trained.permute(1, 2, 0).numpy(), stored)
    if _torchcodec_decode is not None:  # TorchCodec itself: RGB, the stored colour
        frames = _torchcodec_decode(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode="RGB")
        assert np.array_equal(frames.permute(1, 2, 0).numpy(), stored)
    processor = SwinTinyImageProcessor.from_pretrained(folder)
    expected = processor(trained, return_tensors="pt")["pixel_values"]
    assert expected[0, 0, 0, 0].item() == pytest.approx((0 - 0.4802) / 0.2296, abs=1e-4)  # -2.09
    inputs = [Image.open(io.BytesIO(data)), str(path)]
    if opened.mode == "RGBA":
        inputs += [np.array(opened), torch.from_numpy(np.array(opened)).permute(2, 0, 1)]
    for image in inputs:
        assert torch.equal(processor(image, return_tensors="pt")["pixel_values"], expected), type(image)
    with torch.no_grad():
        probabilities = model(expected).logits.softmax(-1)[0].tolist()
    for classify in (plain_pipeline(folder), own_pipeline(folder)):
        for image in (Image.open(io.BytesIO(data)), str(path)):
            assert scores_of(classify, image) == pytest.approx(probabilities, abs=1e-6), (type(classify), image)
    # control: transformers' own processor composites onto white
    white = stock_processor(processor)(Image.open(io.BytesIO(data)), return_tensors="pt")["pixel_values"]
    assert white[0, 0, 0, 0].item() == pytest.approx((1 - 0.4802) / 0.2296, abs=1e-4)  # +2.26


def test_remote_code_carries_the_processor_and_the_pipeline(saved, tmp_path):
    """Where the package cannot be imported: trust_remote_code=True gives transformers' pipeline with the folder's
    processor for "image-classification", and the folder's own pipeline for its task."""
    model, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"] == {
        TASK: {
            "impl": "pipeline_swin_tiny.SwinTinyImageClassificationPipeline",
            "pt": ["AutoModelForImageClassification"],
            "type": "image",
        }
    }
    assert json.loads((folder / "preprocessor_config.json").read_text())["auto_map"] == {
        "AutoImageProcessor": "image_processing_swin_tiny.SwinTinyImageProcessor"
    }
    path, _ = sixteen_bit_png(tmp_path)
    processor = SwinTinyImageProcessor.from_pretrained(folder)
    expected = logits_of(model, processor, Image.open(path)).softmax(-1)
    clipped = logits_of(model, processor, Image.open(path).convert("RGB")).softmax(-1)
    rgba = tmp_path / "rgba.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (32, 32, 4), dtype=np.uint8), "RGBA").save(rgba)
    script = f"""
import torch
from PIL import Image
from transformers import pipeline
plain = pipeline("image-classification", model={str(folder)!r}, trust_remote_code=True, top_k=5)
own = pipeline({TASK!r}, model={str(folder)!r}, trust_remote_code=True, top_k=5)
assert type(plain).__module__.startswith("transformers.pipelines"), type(plain).__module__
assert type(own).__module__.startswith("transformers_modules"), type(own).__module__
for classify in (plain, own):
    assert type(classify.image_processor).__module__.startswith("transformers_modules")
    assert type(classify.image_processor).__name__ == "SwinTinyImageProcessor"
def scores(classify, image):
    found = {{p["label"]: p["score"] for p in classify(image)}}
    return [found[label] for label in "abcde"]
print("OWN", scores(own, {path!r}))
print("PLAIN", scores(plain, {path!r}))
print("RGBA_SAME", all(scores(c, {str(rgba)!r}) == scores(c, Image.open({str(rgba)!r}).convert("RGB"))
                       for c in (plain, own)))
try:
    own(["{tmp_path / "missing.png"}"])
except ValueError as error:
    print("NAMED", "missing.png" in str(error))
as_float = torch.rand(3, 20, 20)
uint8 = (as_float * 255).round().to(torch.uint8)
print("FLOAT_EQUAL", all(scores(c, as_float) == scores(c, uint8) for c in (plain, own)))
"""
    stdout = run_without_the_package(script, tmp_path)
    assert json.loads(stdout.split("OWN ")[1].splitlines()[0]) == pytest.approx(expected.tolist(), abs=1e-6)
    assert json.loads(stdout.split("PLAIN ")[1].splitlines()[0]) == pytest.approx(clipped.tolist(), abs=1e-6)
    assert "NAMED True" in stdout and "FLOAT_EQUAL True" in stdout and "RGBA_SAME True" in stdout


def test_half_precision_tensors_and_32_bit_integer_mode(saved):
    uint8 = torch.randint(0, 256, (3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    halves = (uint8.float() / 255).to(torch.bfloat16)
    assert (to_8_bit(halves).int() - uint8.int()).abs().max() <= 1  # bfloat16 keeps 8 bits of mantissa
    eight_bit_in_mode_i = Image.fromarray(np.full((2, 2), 200, np.int32), mode="I")
    assert rgb_uint8_array(eight_bit_in_mode_i)[0, 0].tolist() == [200, 200, 200]
    sixteen_in_mode_i = Image.fromarray(np.full((2, 2), 51400, np.int32), mode="I")
    assert rgb_uint8_array(sixteen_in_mode_i)[0, 0].tolist() == [200, 200, 200]  # 51400 / 257
    processor = SwinTinyImageProcessor.from_pretrained(saved[1])
    gray = processor(Image.fromarray(np.full((2, 2), 200, np.uint8)), return_tensors="pt")["pixel_values"]
    for image in (eight_bit_in_mode_i, sixteen_in_mode_i):
        assert torch.equal(processor(image, return_tensors="pt")["pixel_values"], gray)

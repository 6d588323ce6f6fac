"""Odd inputs at inference: 16-bit images, float tensors in [0, 1], 2-D grayscale arrays, animated GIFs and
unreadable files, through the saved model's own processor and pipeline (remote code), against the training
decoder. Each comparison has a control: what transformers' stock ViT processor and pipeline do with it."""

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import ImageClassificationPipeline, ViTImageProcessor, pipeline

from swin_tiny_hf import SwinTinyForImageClassification, SwinTinyImageProcessor, save_model_and_processor
from swin_tiny_hf.image_processing_swin_tiny import decode_image_bytes, to_8_bit
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


def stock_processor(processor: SwinTinyImageProcessor) -> ViTImageProcessor:
    return ViTImageProcessor(**{k: v for k, v in processor.to_dict().items() if k != "image_processor_type"})


def test_sixteen_bit_images_are_seen_as_training_decodes_them(saved, tmp_path):
    model, folder = saved
    path, values = sixteen_bit_png(tmp_path)
    processor = SwinTinyImageProcessor.from_pretrained(folder)
    # what training sees: the training decoder's 8 bits (round(v / 257))
    decoded = decode_rgb({"bytes": open(path, "rb").read(), "path": None}, "train", 0)
    eight_bit = ((values.astype(np.int64) + 128) // 257).astype(np.uint8)
    assert torch.equal(decoded, torch.from_numpy(eight_bit)[None].expand(3, -1, -1))
    expected = logits_of(model, processor, decoded)
    for image in (Image.open(path), values, torch.from_numpy(values.astype(np.int32))):
        torch.testing.assert_close(logits_of(model, processor, image), expected, rtol=0, atol=1e-6)
    classify = pipeline("image-classification", model=str(folder), trust_remote_code=True, top_k=5)
    probabilities = expected.softmax(-1)
    for image in (path, Image.open(path)):
        scores = {p["label"]: p["score"] for p in classify(image)}
        for index, label in LABELS.items():
            assert scores[label] == pytest.approx(float(probabilities[index]), abs=1e-6)
    # control: transformers' stock pipeline (load_image's convert("RGB")) clips 16 bits, to white nearly everywhere
    stock = ImageClassificationPipeline(model=model, image_processor=stock_processor(processor), top_k=5)
    clipped = Image.open(path).convert("RGB")
    assert (np.asarray(clipped) == 255).mean() > 0.99
    clipped_probabilities = logits_of(model, processor, clipped).softmax(-1)
    stock_scores = {p["label"]: p["score"] for p in stock(path)}
    assert stock_scores["a"] == pytest.approx(float(clipped_probabilities[0]), abs=1e-6)
    assert not torch.allclose(clipped_probabilities, probabilities, atol=1e-3)


def test_float_images_in_0_1_are_their_uint8_versions(saved):
    model, folder = saved
    processor = SwinTinyImageProcessor.from_pretrained(folder)
    rng = np.random.default_rng(0)
    uint8 = rng.integers(0, 256, (3, 48, 40), dtype=np.uint8)
    expected = logits_of(model, processor, torch.from_numpy(uint8))
    as_float = torch.from_numpy(uint8).float() / 255  # (3, H, W) in [0, 1], as ToTensor gives
    torch.testing.assert_close(logits_of(model, processor, as_float), expected, rtol=0, atol=0)
    hwc = np.ascontiguousarray(uint8.transpose(1, 2, 0)).astype(np.float32) / 255
    torch.testing.assert_close(logits_of(model, processor, hwc), expected, rtol=0, atol=0)
    batch = processor([as_float, torch.from_numpy(uint8)], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch[0], batch[1], rtol=0, atol=0)
    # floats in [0, 255] are rounded; normalised floats are refused, naming the range
    torch.testing.assert_close(logits_of(model, processor, torch.from_numpy(uint8).double()), expected)
    with pytest.raises(ValueError, match=r"values in \[0, 1\] \(or \[0, 255\]\), got values in \[-"):
        processor((as_float - 0.5) / 0.25, return_tensors="pt")
    # control: the stock processor rescales [0, 1] by 1/255 again
    stock = stock_processor(processor)
    with torch.no_grad():
        twice = model(stock(as_float, return_tensors="pt")["pixel_values"]).logits[0]
    assert not torch.allclose(twice, expected, atol=1e-2)


def test_two_dimensional_grayscale_arrays(saved):
    model, folder = saved
    processor = SwinTinyImageProcessor.from_pretrained(folder)
    gray = np.random.default_rng(1).integers(0, 256, (30, 50), dtype=np.uint8)
    expected = logits_of(model, processor, np.repeat(gray[..., None], 3, axis=-1))
    for image in (gray, torch.from_numpy(gray), Image.fromarray(gray, mode="L")):
        torch.testing.assert_close(logits_of(model, processor, image), expected, rtol=0, atol=1e-6)
    classify = pipeline("image-classification", model=str(folder), trust_remote_code=True, top_k=1)
    assert classify(gray)[0]["label"] == LABELS[int(expected.argmax())]
    with pytest.raises(ValueError, match="Could not make a flat list of images"):  # control
        stock_processor(processor)(gray, return_tensors="pt")


def animated_gif() -> tuple[bytes, np.ndarray]:
    rng = np.random.default_rng(2)
    frames = [Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).convert("P") for _ in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    return buffer.getvalue(), np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))


def test_animated_gif_is_its_first_frame_in_training_and_inference(saved, tmp_path):
    model, folder = saved
    data, first_frame = animated_gif()
    assert Image.open(io.BytesIO(data)).n_frames == 3
    decoded = decode_image_bytes(data)
    assert torch.equal(decoded, torch.from_numpy(first_frame).permute(2, 0, 1))
    (tmp_path / "animated.gif").write_bytes(data)
    classify = pipeline("image-classification", model=str(folder), trust_remote_code=True, top_k=1)
    processor = SwinTinyImageProcessor.from_pretrained(folder)
    expected = logits_of(model, processor, first_frame)
    best = classify(str(tmp_path / "animated.gif"))[0]
    assert best["label"] == LABELS[int(expected.argmax())]
    assert best["score"] == pytest.approx(float(expected.softmax(-1).max()), abs=1e-6)


def test_unreadable_file_in_a_list_is_named(saved, tmp_path):
    _, folder = saved
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20), (10, 200, 30)).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:60])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    classify = pipeline("image-classification", model=str(folder), trust_remote_code=True)
    assert classify([str(good)])[0][0]["label"] in LABELS.values()
    with pytest.raises(ValueError, match=r"could not read the image '.*truncated\.png'"):
        classify([str(good), str(truncated), str(good)])
    with pytest.raises(ValueError, match=r"could not read the image '.*empty\.jpg': the image has no bytes"):
        classify([str(empty)])
    with pytest.raises(ValueError, match=r"could not read the image 'no/such/file\.png'"):
        classify("no/such/file.png")


def test_to_8_bit_leaves_8_bit_images_alone_and_refuses_what_it_cannot_read():
    image = Image.new("RGB", (4, 4))
    assert to_8_bit(image) is image
    array = np.zeros((4, 4, 3), np.uint8)
    assert to_8_bit(array) is array
    dark = np.full((2, 2), 200, np.uint16)  # a dark 16-bit image stays 16-bit: 200 / 257 rounds to 1
    assert to_8_bit(dark).max() == 1
    with pytest.raises(ValueError, match="finite"):
        to_8_bit(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"values in \[0, 255\] or \[0, 65535\], got values in \[-3, 4\]"):
        to_8_bit(np.array([[-3, 4]], np.int32))


def test_remote_code_carries_the_processor_and_the_pipeline(saved, tmp_path):
    model, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert config["custom_pipelines"]["image-classification"]["impl"] == (
        "pipeline_swin_tiny.SwinTinyImageClassificationPipeline"
    )
    assert json.loads((folder / "preprocessor_config.json").read_text())["auto_map"] == {
        "AutoImageProcessor": "image_processing_swin_tiny.SwinTinyImageProcessor"
    }
    path, _ = sixteen_bit_png(tmp_path)
    processor = SwinTinyImageProcessor.from_pretrained(folder)
    expected = logits_of(model, processor, Image.open(path)).softmax(-1)
    script = f"""
import torch
from transformers import pipeline, AutoImageProcessor
classify = pipeline("image-classification", model={str(folder)!r}, trust_remote_code=True, top_k=5)
assert type(classify).__module__.startswith("transformers_modules"), type(classify).__module__
assert type(classify.image_processor).__name__ == "SwinTinyImageProcessor"
scores = {{p["label"]: p["score"] for p in classify({path!r})}}
print("SCORES", [scores[label] for label in "abcde"])
try:
    classify(["{tmp_path / "missing.png"}"])
except ValueError as error:
    print("NAMED", "missing.png" in str(error))
as_float = torch.rand(3, 20, 20)
uint8 = (as_float * 255).round().to(torch.uint8)
a, b = classify([as_float, uint8])
print("FLOAT_EQUAL", a == b)
"""
    stdout = run_without_the_package(script, tmp_path)
    scores = json.loads(stdout.split("SCORES ")[1].splitlines()[0])
    assert scores == pytest.approx(expected.tolist(), abs=1e-6)
    assert "NAMED True" in stdout and "FLOAT_EQUAL True" in stdout


def test_half_precision_tensors_and_32_bit_integer_mode():
    uint8 = torch.randint(0, 256, (3, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    halves = (uint8.float() / 255).to(torch.bfloat16)
    assert (to_8_bit(halves).int() - uint8.int()).abs().max() <= 1  # bfloat16 keeps 8 bits of mantissa
    eight_bit_in_mode_i = Image.fromarray(np.full((2, 2), 200, np.int32), mode="I")
    assert np.asarray(to_8_bit(eight_bit_in_mode_i))[0, 0].tolist() == [200, 200, 200]
    sixteen_in_mode_i = Image.fromarray(np.full((2, 2), 51400, np.int32), mode="I")
    assert np.asarray(to_8_bit(sixteen_in_mode_i))[0, 0].tolist() == [200, 200, 200]  # 51400 / 257

"""PEFT's LoRA, a client we did not write, on the attention and MLP projections and the patch embedding."""

import pytest
import torch

from swin_tiny_hf import SwinTinyForImageClassification
from swin_tiny_hf.modeling_swin_tiny import ChannelsLastLinear

from conftest import tiny_config

peft = pytest.importorskip("peft")
TARGETS = ["qkv", "proj", "fc1", "fc2"]


def lora_model(base):
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, modules_to_save=["classifier"])
    return peft.get_peft_model(base, config)


def test_lora_trains_saves_loads_and_merges(tmp_path, pixel_values):
    torch.manual_seed(0)
    base = SwinTinyForImageClassification(tiny_config(drop_path_rate=0.0))
    base.save_pretrained(tmp_path / "base")
    model = lora_model(base)
    wrapped = [n for n, m in model.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)]
    # 6 blocks x (qkv, proj, fc1, fc2); the patch embedding's "projection" is not a target
    assert len(wrapped) == 24 and not any("embeddings" in n for n in wrapped)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or "classifier" in n for n in trainable)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    labels = torch.tensor([0, 1, 2])
    model.train()
    losses = []
    for _ in range(8):
        loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)  # base untouched

    model.eval()
    with torch.no_grad():
        expected = model(pixel_values=pixel_values).logits
    # under no_grad the base linears run on oneDNN and an adapter's fc1 keeps its GELU apart (the wrapper's forward
    # runs): the same logits as with gradients on, where PyTorch's own path runs
    with_gradients = model(pixel_values=pixel_values).logits.detach()
    torch.testing.assert_close(expected, with_gradients, rtol=0, atol=1e-5)
    model.save_pretrained(tmp_path / "adapter")
    saved = {p.name for p in (tmp_path / "adapter").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= saved
    adapter_bytes = (tmp_path / "adapter" / "adapter_model.safetensors").stat().st_size
    base_bytes = (tmp_path / "base" / "model.safetensors").stat().st_size
    assert adapter_bytes < base_bytes / 2  # the adapter and the head, not the whole model

    reloaded = peft.PeftModel.from_pretrained(
        SwinTinyForImageClassification.from_pretrained(tmp_path / "base"), tmp_path / "adapter"
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixel_values).logits, expected, rtol=0, atol=1e-6)
        merged = reloaded.merge_and_unload().eval()
        assert type(merged) is SwinTinyForImageClassification
        assert isinstance(merged.swin.stages[0].blocks[0].attention.qkv, ChannelsLastLinear)
        difference = (merged(pixel_values).logits - expected).abs().max()
    assert difference < 1e-4, float(difference)


def test_lora_with_gradient_checkpointing_on_a_frozen_trunk_trains(pixel_values):
    """Reentrant checkpointing passes gradients only to blocks whose input requires them: on a frozen trunk that
    takes `enable_input_require_grads` (which PEFT calls) hooking the patch embedding's output."""
    torch.manual_seed(0)
    base = SwinTinyForImageClassification(tiny_config(drop_path_rate=0.0))
    base.activation_checkpointing_enable({"use_reentrant": True})
    model = lora_model(base)
    assert base.get_input_embeddings() is base.swin.embeddings.projection
    lora_in_blocks = {n: p for n, p in model.named_parameters() if "lora_" in n and ".blocks." in n}
    assert len(lora_in_blocks) == 48  # 24 wrapped linears x (A, B)
    labels = torch.tensor([0, 1, 2])
    model.train()

    # Without the hook, no LoRA parameter inside a checkpointed block gets a gradient: the control.
    base.disable_input_require_grads()
    with pytest.warns(UserWarning, match="None of the inputs have requires_grad=True"):  # torch's own word for it
        model(pixel_values=pixel_values, labels=labels).loss.backward()
    assert all(p.grad is None for p in lora_in_blocks.values())
    model.zero_grad(set_to_none=True)

    base.enable_input_require_grads()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for step in range(6):
        loss = model(pixel_values=pixel_values, labels=labels).loss
        loss.backward()
        if step == 0:  # every LoRA B starts at zero, so A's gradient is zero on the first step; B's is not
            b_grads = [p.grad for n, p in lora_in_blocks.items() if "lora_B" in n]
            assert all(g is not None and g.abs().sum() > 0 for g in b_grads)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.abs().sum() > 0 for n, p in lora_in_blocks.items() if "lora_B" in n)  # every adapter moved


def test_lora_on_the_patch_embedding_convolution(pixel_values):
    """LoRA may also target the patch embedding's Conv2d ("projection"): PEFT wraps it, which hides its kernel size,
    so the embedding keeps the patch size itself. At initialisation (LoRA's B = 0) the logits are the base model's;
    the adapter's B matrix gets a gradient (A's is zero while B is)."""
    torch.manual_seed(0)
    base = SwinTinyForImageClassification(tiny_config(drop_path_rate=0.0)).eval()
    with torch.no_grad():
        expected = base(pixel_values).logits
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["projection", *TARGETS])
    model = peft.get_peft_model(base, config)
    projection = model.base_model.model.swin.embeddings.projection
    assert isinstance(projection, peft.tuners.lora.LoraLayer)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixel_values).logits, expected)
    model.train()
    model(pixel_values=pixel_values, labels=torch.tensor([0, 1, 2])).loss.backward()
    grads = {n: p.grad for n, p in projection.named_parameters() if "lora_B" in n}
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads.values()), grads

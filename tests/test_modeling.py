import contextlib
import io
import logging
import platform
import unittest.mock
import warnings
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers.modeling_outputs import BaseModelOutputWithPooling, ImageClassifierOutput

from swin_tiny_hf import SwinTinyBackbone, SwinTinyConfig, SwinTinyForImageClassification, SwinTinyModel
from swin_tiny_hf import modeling_swin_tiny as modeling
from swin_tiny_hf.modeling_swin_tiny import ChannelsLastLinear, SwinBlock

from conftest import perturbed, tiny_config


def closed_form_parameter_count(config: SwinTinyConfig) -> int:
    """Count from the architecture's definition, independently of the modules."""
    D, p = config.embed_dim, config.patch_size
    total = config.num_channels * D * p * p + D + (2 * D if config.patch_norm else 0)
    for i, depth in enumerate(config.depths):
        C, M, h = D * 2**i, config.stage_windows[i], config.num_heads[i]
        hidden = int(C * config.mlp_ratio)
        block = (
            2 * C
            + (3 * C * C + 3 * C)
            + (C * C + C)
            + (2 * M - 1) ** 2 * h
            + 2 * C
            + (C * hidden + hidden)
            + (hidden * C + C)
        )
        total += depth * block
        if i < len(config.depths) - 1:
            total += 2 * 4 * C + 4 * C * 2 * C
    H = config.hidden_size
    return total + 2 * H + H * config.num_labels + config.num_labels


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_count_of_classic_swin_t_is_the_papers():
    config = SwinTinyConfig(image_size=224, num_heads=[3, 6, 12, 24], window_size=7, num_labels=1000)
    model = SwinTinyForImageClassification(config)
    assert count(model) == 28_288_354 == closed_form_parameter_count(config)
    timm = pytest.importorskip("timm")
    reference = timm.models.swin_transformer.SwinTransformer(
        img_size=224, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, num_classes=1000
    )
    assert count(reference) == count(model)


def test_parameter_count_of_default_tiny_imagenet_model():
    config = SwinTinyConfig()
    model = SwinTinyForImageClassification(config)
    assert count(model) == closed_form_parameter_count(config) == 27_655_172


def test_outputs_types_shapes_and_pooling(config, pixel_values):
    model = SwinTinyModel(config).eval()
    out = model(pixel_values, output_hidden_states=True, output_attentions=True)
    assert isinstance(out, BaseModelOutputWithPooling)
    assert out.last_hidden_state.shape == (3, 4 * 4, 64)
    torch.testing.assert_close(out.pooler_output, out.last_hidden_state.mean(dim=1))
    assert [h.shape for h in out.hidden_states] == [(3, 256, 16), (3, 256, 16), (3, 64, 32), (3, 16, 64)]
    # one attention map per block: (B, nW, heads, N, N); rows are distributions.
    assert [a.shape for a in out.attentions] == [(3, 16, 1, 16, 16)] * 2 + [(3, 4, 2, 16, 16)] * 2 + [
        (3, 1, 4, 16, 16)
    ] * 2
    for attention in out.attentions:
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))
    # the last stage's output, normalised, is last_hidden_state
    torch.testing.assert_close(model.norm(out.hidden_states[-1]), out.last_hidden_state)

    classifier = SwinTinyForImageClassification(config).eval()
    result = classifier(pixel_values)
    assert isinstance(result, ImageClassifierOutput) and result.loss is None
    assert result.logits.shape == (3, 5)
    as_tuple = classifier(pixel_values, return_dict=False)
    torch.testing.assert_close(as_tuple[0], result.logits)


def test_every_parameter_receives_a_gradient(config, pixel_values):
    model = SwinTinyForImageClassification(config).train()
    model(pixel_values, labels=torch.tensor([0, 1, 2])).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert missing == []


def test_eval_is_deterministic_and_training_is_not(config, pixel_values):
    model = SwinTinyForImageClassification(tiny_config(drop_path_rate=0.5)).eval()
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values).logits, model(pixel_values).logits, rtol=0, atol=0)
        model.train()
        assert not torch.allclose(model(pixel_values).logits, model(pixel_values).logits)


def test_drop_path_rate_rises_linearly_over_all_blocks(config):
    model = SwinTinyModel(tiny_config(drop_path_rate=0.25))
    rates = [m.drop_path.rate for m in model.modules() if isinstance(m, SwinBlock)]
    assert rates == pytest.approx([0.25 * i / 5 for i in range(6)])
    assert rates[0] == 0 and rates[-1] == pytest.approx(0.25)


def test_blocks_alternate_shift_and_clipped_stage_does_not_shift(config):
    model = SwinTinyModel(config)
    shifts = [
        [stage.shift_for(n, n) if b.shifted else 0 for b in stage.blocks]
        for stage, n in zip(model.stages, config.stage_resolutions)
    ]
    assert shifts == [[0, 2], [0, 2], [0, 0]]
    default_config = SwinTinyConfig(depths=[2, 2, 2, 2], embed_dim=32, num_heads=[1, 2, 4, 8])
    default = SwinTinyModel(default_config)
    assert [
        [s.shift_for(n, n) if b.shifted else 0 for b in s.blocks]
        for s, n in zip(default.stages, default_config.stage_resolutions)
    ] == [[0, 4], [0, 0], [0, 0], [0, 0]]


def test_soft_one_hot_labels_give_the_hard_label_loss(config, pixel_values):
    model = SwinTinyForImageClassification(config).eval()
    hard = torch.tensor([4, 0, 2])
    soft = torch.nn.functional.one_hot(hard, 5).float()
    hard_loss = model(pixel_values, labels=hard).loss
    soft_loss = model(pixel_values, labels=soft).loss
    torch.testing.assert_close(hard_loss, soft_loss)
    # against a closed form: -mean(log softmax at the label)
    logits = model(pixel_values).logits
    expected = -torch.log_softmax(logits, -1)[torch.arange(3), hard].mean()
    torch.testing.assert_close(hard_loss, expected)
    # a genuinely soft target: sum_k -t_k log p_k
    target = torch.softmax(torch.randn(3, 5), -1)
    expected_soft = -(target * torch.log_softmax(logits, -1)).sum(-1).mean()
    torch.testing.assert_close(model(pixel_values, labels=target).loss, expected_soft)


def test_problem_type_is_respected(pixel_values):
    multi = SwinTinyForImageClassification(tiny_config(problem_type="multi_label_classification")).eval()
    targets = torch.tensor([[1.0, 0, 1, 0, 0], [0, 0, 0, 0, 1], [1, 1, 1, 1, 1]])
    logits = multi(pixel_values).logits
    torch.testing.assert_close(
        multi(pixel_values, labels=targets).loss, torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
    )
    regression = SwinTinyForImageClassification(tiny_config(num_labels=1, problem_type="regression")).eval()
    y = torch.tensor([0.5, -1.0, 2.0])
    torch.testing.assert_close(
        regression(pixel_values, labels=y).loss, ((regression(pixel_values).logits.squeeze(-1) - y) ** 2).mean()
    )
    assert regression.config.problem_type == "regression"


@pytest.mark.parametrize(
    "labels, problem_type, message",
    [
        (torch.tensor([0, 1, 5]), None, r"must lie in \[0, 5\) or be -100 \(ignored\), got \[5\]"),
        (torch.tensor([[0, 1], [1, 0], [2, 2]]), None, r"class-id labels must be integers of shape \(3,\) or"),
        (torch.ones(3, 4), None, r"multi-label labels must have shape \(batch, num_labels\) = \(3, 5\), got \(3, 4\)"),
        (torch.ones(3, 4), "single_label_classification", r"soft-target labels must have shape .* = \(3, 5\)"),
        (torch.ones(3), "single_label_classification", r"class ids must be an integer tensor of shape \(3,\)"),
        (torch.ones(3, 4), "regression", r"regression labels must have shape \(3, 5\), got \(3, 4\)"),
    ],
)
def test_bad_labels_raise(pixel_values, labels, problem_type, message):
    with pytest.raises(ValueError, match=message):
        SwinTinyForImageClassification(tiny_config(problem_type=problem_type))(pixel_values, labels=labels)


@pytest.mark.parametrize(
    "make_input, message",
    [
        (lambda: torch.randn(3, 32, 32), r"must be 4-D \(batch, 3, height, width\), got shape \(3, 32, 32\)"),
        (lambda: torch.randn(2, 1, 32, 32), r"has 1 channels, expected 3"),
        (lambda: torch.randn(2, 3, 0, 32), r"empty spatial size \(0, 32\)"),
        (lambda: torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), r"floating-point tensor.*torch.uint8"),
        (lambda: [[1.0]], r"must be a torch.Tensor, got list"),
    ],
)
def test_bad_input_raises_naming_expected_and_received(config, make_input, message):
    model = SwinTinyForImageClassification(config)
    with pytest.raises(ValueError, match=message):
        model(make_input())


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(config, pixel_values):
    labels = torch.tensor([1, 2, 3])
    model = SwinTinyForImageClassification(tiny_config(drop_path_rate=0.3)).train()

    def loss_and_grads():
        model.zero_grad()
        torch.manual_seed(123)  # same drop-path draws in both runs
        loss = model(pixel_values, labels=labels).loss
        loss.backward()
        return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}

    plain_loss, plain_grads = loss_and_grads()
    model.activation_checkpointing_enable()
    assert all(b.gradient_checkpointing for b in model.modules() if isinstance(b, SwinBlock))
    checkpointed_loss, checkpointed_grads = loss_and_grads()
    torch.testing.assert_close(checkpointed_loss, plain_loss)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(checkpointed_grads[name], grad, msg=name)


def test_sdpa_and_eager_agree_in_fp32(config, pixel_values):
    model = SwinTinyForImageClassification(config).eval()
    assert model.config._attn_implementation == "sdpa"
    with torch.no_grad():
        for p in model.parameters():  # non-trivial bias tables and norms
            p.add_(torch.randn_like(p) * 0.05)
        sdpa = model(pixel_values).logits
        model.set_attn_implementation("eager")
        assert model.config._attn_implementation == "eager"
        eager = model(pixel_values).logits
    torch.testing.assert_close(sdpa, eager, rtol=0, atol=1e-5)
    eager_model = SwinTinyForImageClassification._from_config(config, attn_implementation="eager")
    assert eager_model.config._attn_implementation == "eager"


def test_sdpa_and_eager_gradients_agree(config, pixel_values):
    """With the bias tables frozen (as PEFT's adapters leave them) training runs SDPA's fused kernel, forward and
    backward: its gradients are those of the explicit products."""
    torch.manual_seed(0)
    model = perturbed(SwinTinyForImageClassification(tiny_config(drop_path_rate=0.0))).train()
    tables = [p for n, p in model.named_parameters() if n.endswith("relative_position_bias_table")]
    assert len(tables) == sum(config.depths)
    for table in tables:
        table.requires_grad_(False)
    labels = torch.tensor([0, 1, 2])
    grads = {}
    for implementation in ("sdpa", "eager"):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        with count_attention_calls() as calls:
            model(pixel_values, labels=labels).loss.backward()
        assert len(calls) == (sum(config.depths) if implementation == "sdpa" else 0)
        grads[implementation] = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    for name in grads["sdpa"]:
        torch.testing.assert_close(grads["sdpa"][name], grads["eager"][name], atol=1e-5, rtol=1e-4, msg=name)


@contextlib.contextmanager
def count_attention_calls():
    """The dtypes of the queries of every `F.scaled_dot_product_attention` call made inside."""
    calls = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls.append(args[0].dtype)
        return sdpa(*args, **kwargs)

    with unittest.mock.patch.object(torch.nn.functional, "scaled_dot_product_attention", counted):
        yield calls


@pytest.mark.parametrize("mode", ["train", "inference"])
@pytest.mark.parametrize("precision", ["bf16 autocast", "bf16 weights", "fp16 weights", "fp32"])
def test_sdpa_on_the_cpu_takes_the_matrix_products_where_they_are_faster(config, pixel_values, precision, mode):
    """On the CPU, "sdpa" computes what "eager" computes where SDPA's kernels are slower at these windows (see
    `sdpa_is_slower`): in bf16, and in training, where the mask holds the learned bias and would send SDPA to its
    math fallback. There the logits and gradients are eager's, bit for bit, and SDPA is not called. In fp32
    inference SDPA runs, one call per block, and answers as eager."""
    model = perturbed(SwinTinyForImageClassification(tiny_config(drop_path_rate=0.0))).train(mode == "train")
    dtype = {"bf16 weights": torch.bfloat16, "fp16 weights": torch.float16}.get(precision, torch.float32)
    model, pixel_values = model.to(dtype), pixel_values.to(dtype)
    labels = torch.tensor([0, 1, 2])
    results = {}
    for implementation in ("sdpa", "eager"):
        model.set_attn_implementation(implementation)
        model.zero_grad()
        with (
            count_attention_calls() as calls,
            torch.set_grad_enabled(mode == "train"),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16 autocast"),
        ):
            output = model(pixel_values, labels=labels)
        if mode == "train":
            output.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results[implementation] = (output.logits, grads, calls)
    assert results["eager"][2] == []
    if precision == "fp32" and mode == "inference":
        assert results["sdpa"][2] == [torch.float32] * sum(config.depths)
        torch.testing.assert_close(results["sdpa"][0], results["eager"][0], atol=1e-5, rtol=1e-4)
        return
    assert results["sdpa"][2] == []
    assert torch.equal(results["sdpa"][0], results["eager"][0])
    assert results["sdpa"][0].dtype == (torch.bfloat16 if precision == "bf16 autocast" else dtype)
    assert len(results["sdpa"][1]) == (len(list(model.parameters())) if mode == "train" else 0)
    for name, grad in results["sdpa"][1].items():
        assert torch.equal(grad, results["eager"][1][name]), name


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_attention_rounds_its_softmax_once_from_fp32(dtype):
    """The explicit attention takes its softmax in the scores' dtype (no cast to fp32 and back): its weights are an
    fp32 softmax of the same scores rounded once (bf16 bit for bit, fp16 within one unit in the last place, with
    masked pairs at exactly zero), and the gradients match those of the fp32 detour within the dtype's rounding."""
    generator = torch.Generator().manual_seed(0)
    B, G, N, d = 4, 6, 16, 8
    query, key, value = (torch.randn(B, G, N, d, generator=generator).to(dtype).requires_grad_() for _ in range(3))
    mask = torch.randn(1, G, N, N, generator=generator).to(dtype)
    mask[..., 1::3, 0] = float("-inf")  # masked pairs, as the shift mask makes them
    weights_shape = (B, G, N, N)
    output, weights = modeling.eager_window_attention(query, key, value, mask, 0.0, weights_shape)

    scores = torch.bmm(query.flatten(0, 1), key.flatten(0, 1).transpose(1, 2)).view(B, G, N, N) * d**-0.5 + mask
    detour = scores.float().softmax(-1).to(dtype)  # what an fp32 softmax, then a cast, gives
    assert weights.dtype == dtype and (weights[..., 1::3, 0] == 0).all()
    if dtype == torch.bfloat16:
        assert torch.equal(weights, detour)
    else:
        torch.testing.assert_close(weights, detour, atol=2**-14, rtol=2**-10)

    grad = torch.randn(output.shape, generator=generator).to(dtype)
    ours = torch.autograd.grad(output, (query, key, value), grad)
    expected_output = torch.bmm(detour.view(B * G, N, N), value.flatten(0, 1)).view(B, G, N, d)
    expected = torch.autograd.grad(expected_output, (query, key, value), grad)
    for got, want in zip(ours, expected):
        scale = want.float().abs().max()
        assert (got.float() - want.float()).abs().max() <= 2**-6 * scale
        assert not torch.equal(got, torch.zeros_like(got))


@pytest.mark.skipif(not torch.backends.cuda.is_built(), reason="fake CUDA tensors need a CUDA build of PyTorch")
def test_attentions_under_gpu_autocast_come_back_in_the_products_dtype(config):
    """GPU autocast runs softmax in fp32 (a rule the CPU's autocast does not have): the explicit attention brings
    its weights back to the scores' dtype, so `output_attentions` returns bf16, as before the softmax stopped
    asking for fp32. Traced on fake CUDA tensors (no GPU needed), autocast switched on by hand."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = SwinTinyForImageClassification(config).eval()
    with FakeTensorMode(allow_non_fake_inputs=True):
        model = model.to("cuda")
        pixels = torch.empty(2, 3, config.image_size, config.image_size, device="cuda")
        previous = torch.get_autocast_dtype("cuda")
        torch.set_autocast_dtype("cuda", torch.bfloat16)
        torch.set_autocast_enabled("cuda", True)
        try:
            assert torch.empty(2, 2, device="cuda").softmax(-1).dtype == torch.float32  # the rule this guards
            assert torch.empty(2, 2, device="cuda", dtype=torch.bfloat16).softmax(-1).dtype == torch.float32
            out = model(pixels, output_attentions=True)
        finally:
            torch.set_autocast_enabled("cuda", False)
            torch.set_autocast_dtype("cuda", previous)
    assert out.logits.dtype == torch.bfloat16
    assert len(out.attentions) == sum(config.depths)
    assert {a.dtype for a in out.attentions} == {torch.bfloat16}


@pytest.mark.parametrize("weights_dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_a_model_in_another_dtype_takes_the_processors_float32_pixels_as_its_own(config, pixel_values, weights_dtype):
    """As transformers' ViT: the image processor gives float32, and a model loaded in bf16, fp16 or float64 casts
    the pixels to its weights' dtype (it used to stop with a bare conv2d dtype error). The logits are those of
    pixels cast by hand, and the backbone does the same."""
    torch.manual_seed(0)
    model = SwinTinyForImageClassification(config).eval().to(weights_dtype)
    backbone = SwinTinyBackbone(tiny_config(out_features=["stage1", "stage3"])).eval().to(weights_dtype)
    with torch.no_grad():
        logits = model(pixel_values).logits
        by_hand = model(pixel_values.to(weights_dtype)).logits
        maps = backbone(pixel_values).feature_maps
        maps_by_hand = backbone(pixel_values.to(weights_dtype)).feature_maps
    assert logits.dtype == weights_dtype and torch.isfinite(logits).all() and torch.equal(logits, by_hand)
    assert all(a.dtype == weights_dtype and torch.equal(a, b) for a, b in zip(maps, maps_by_hand, strict=True))


def test_bf16_autocast_is_finite(config, pixel_values):
    model = SwinTinyForImageClassification(config).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(pixel_values, labels=torch.tensor([0, 1, 2]))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss)
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_torch_compile_has_no_graph_break(config, pixel_values):
    torch._dynamo.reset()
    model = SwinTinyForImageClassification(config).eval()
    explanation = torch._dynamo.explain(model)(pixel_values)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(pixel_values).logits, model(pixel_values).logits)


def test_torch_compile_takes_class_id_labels_in_one_graph(config, pixel_values):
    """With class-id labels and a problem type, the loss compiles in the same single graph (`fullgraph=True`: the
    range check that needs the labels' values runs in eager mode only) and gives eager's loss and gradients; eager
    mode still names an id out of range."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = SwinTinyForImageClassification(
        tiny_config(drop_path_rate=0.0, problem_type="single_label_classification")
    ).train()
    labels = torch.tensor([0, 2, modeling.IGNORE_INDEX])
    explanation = torch._dynamo.explain(model)(pixel_values, labels=labels)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    losses, grads = [], []
    for run in (compiled, model):
        model.zero_grad()
        loss = run(pixel_values, labels=labels).loss
        loss.backward()
        losses.append(loss.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(losses[0], losses[1])
    for compiled_grad, eager_grad in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(compiled_grad, eager_grad)
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\).*\[7\]"):
        model(pixel_values, labels=torch.tensor([0, 7, 1]))


def test_a_compiled_forward_records_the_first_labels_problem_type_and_warns_as_eager(config, pixel_values, caplog):
    """Without a problem type, a compiled forward (as Trainer's torch_compile) leaves its graph once to record the
    first labels' problem type in the config, which is saved, with eager's warning for float rows that sum to 1;
    then it runs in one graph."""
    torch._dynamo.reset()
    model = SwinTinyForImageClassification(tiny_config(drop_path_rate=0.0)).train()
    compiled = torch.compile(model, backend="eager")
    soft = torch.softmax(torch.randn(3, config.num_labels), -1)  # Mixup-like rows, read as multi-label by the rule
    with caplog.at_level(logging.WARNING, logger=modeling.logger.name):
        loss = compiled(pixel_values, labels=soft).loss
    assert model.config.problem_type == "multi_label_classification"
    assert "Float labels whose rows sum to 1 were read as multi-label targets" in caplog.text
    expected = torch.nn.functional.binary_cross_entropy_with_logits(model(pixel_values).logits, soft)
    torch.testing.assert_close(loss, expected)
    assert torch._dynamo.explain(model)(pixel_values, labels=soft).graph_break_count == 0


class OperatorLog(TorchDispatchMode):
    """The names of the ATen operators that run inside it (below autograd: the kernels' own ops)."""

    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("as_convolutions", [True, False], ids=["convolution (AMD)", "linear (other CPUs)"])
def test_channels_last_linear_is_nn_linear_forward_and_backward(monkeypatch, as_convolutions):
    """Either kernel a CPU gets (`FP32_LINEARS_AS_CONVOLUTIONS`) computes `nn.Linear`'s output and gradients, and
    the one chosen is the one that runs: the 1x1 convolution on AMD, MKL's product elsewhere."""
    monkeypatch.setattr(modeling, "FP32_LINEARS_AS_CONVOLUTIONS", as_convolutions)
    torch.manual_seed(0)
    layer = ChannelsLastLinear(7, 5)
    x = torch.randn(2, 3, 4, 7, requires_grad=True)  # (B, H, W, C), non-square map
    with OperatorLog() as log:
        out = layer(x)
    assert any(name.startswith("convolution") for name in log.names) == as_convolutions, log.names
    assert any(name.startswith(("addmm", "mm.", "linear")) for name in log.names) != as_convolutions, log.names
    assert out.shape == (2, 3, 4, 5) and out.is_contiguous()
    grad = torch.randn_like(out)
    out.backward(grad)
    got = (x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())
    x.grad, layer.weight.grad, layer.bias.grad = None, None, None
    expected_out = torch.nn.functional.linear(x, layer.weight, layer.bias)
    expected_out.backward(grad)
    torch.testing.assert_close(out, expected_out, atol=1e-5, rtol=1e-5)
    for g, e in zip(got, (x.grad, layer.weight.grad, layer.bias.grad)):
        torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-5)
    flat = torch.randn(4, 7)  # 2-D input takes nn.Linear itself
    torch.testing.assert_close(layer(flat), torch.nn.functional.linear(flat, layer.weight, layer.bias))
    assert set(layer.state_dict()) == {"weight", "bias"}
    torch._dynamo.reset()
    assert torch._dynamo.explain(layer)(x).graph_break_count == 0  # the choice is a constant to a compiler


def test_the_whole_model_trains_alike_on_either_kernel(monkeypatch):
    """The convolution path (AMD's) and the plain linear (Intel's, other CPUs') inside the whole model, at its size
    and at one that pads every stage: the same loss and the same gradient for every parameter, to fp32 rounding.
    CI runs on either vendor, so each path is exercised wherever it runs."""
    torch.manual_seed(0)
    model = SwinTinyForImageClassification(tiny_config(drop_path_rate=0.0)).train()
    labels = torch.tensor([1, 3])
    for pixel_values in (torch.randn(2, 3, 32, 32), torch.randn(2, 3, 27, 37)):
        results = {}
        for as_convolutions in (True, False):
            monkeypatch.setattr(modeling, "FP32_LINEARS_AS_CONVOLUTIONS", as_convolutions)
            model.zero_grad()
            with OperatorLog() as log:
                loss = model(pixel_values, labels=labels).loss
            convolutions = sum(name.startswith("convolution") for name in log.names)
            loss.backward()
            grads = {name: p.grad.clone() for name, p in model.named_parameters()}
            results[as_convolutions] = (loss.detach(), grads, convolutions)
        (loss_conv, grads_conv, n_conv), (loss_plain, grads_plain, n_plain) = results[True], results[False]
        assert n_plain == 1 and n_conv > 1  # the patch embedding only, against every map linear too
        torch.testing.assert_close(loss_conv, loss_plain, atol=1e-6, rtol=1e-5)
        for name in grads_plain:
            torch.testing.assert_close(grads_conv[name], grads_plain[name], atol=1e-6, rtol=1e-4, msg=name)


CPUINFO = """processor\t: 0
vendor_id\t: {vendor}
cpu family\t: 25
model name\t: AMD EPYC 9R14
"""


def test_the_cpu_vendor_is_read_where_each_system_lists_it(monkeypatch):
    """Windows' processor string, Linux's /proc/cpuinfo, nothing where neither exists or the CPU is not x86."""
    monkeypatch.setattr(modeling.platform, "machine", lambda: "AMD64")
    monkeypatch.setattr(modeling, "sys", SimpleNamespace(platform="win32"))
    monkeypatch.setattr(modeling.platform, "processor", lambda: "AMD64 Family 26 Model 2 Stepping 0, AuthenticAMD")
    assert modeling.cpu_vendor() == "AuthenticAMD"

    def no_proc(*args, **kwargs):
        raise FileNotFoundError("/proc/cpuinfo")

    monkeypatch.setattr(modeling, "sys", SimpleNamespace(platform="darwin"))
    monkeypatch.setattr(modeling, "open", no_proc, raising=False)
    assert modeling.cpu_vendor() == ""  # and no `uname -p` subprocess: processor() says AMD, unread
    monkeypatch.setattr(modeling, "sys", SimpleNamespace(platform="linux"))
    monkeypatch.setattr(modeling, "open", lambda *a, **k: io.StringIO(CPUINFO.format(vendor="AuthenticAMD")))
    assert modeling.cpu_vendor() == "AuthenticAMD"
    monkeypatch.setattr(modeling.platform, "machine", lambda: "aarch64")
    assert modeling.cpu_vendor() == ""


def test_fp32_linears_take_convolutions_on_amd_cpus_only():
    """The vendor read from Linux's /proc/cpuinfo or Windows' processor string, and the rule on it: AMD's CPUs
    train fp32 linears as convolutions (MKL takes its AVX2 path there), Intel's and unknown ones as MKL's product."""
    assert modeling.vendor_in(CPUINFO.format(vendor="AuthenticAMD")) == "AuthenticAMD"
    assert modeling.vendor_in(CPUINFO.format(vendor="GenuineIntel")) == "GenuineIntel"
    assert modeling.vendor_in("Intel64 Family 6 Model 207 Stepping 2, GenuineIntel") == "GenuineIntel"  # Windows
    assert modeling.vendor_in("AMD64 Family 26 Model 2 Stepping 0, AuthenticAMD") == "AuthenticAMD"
    assert modeling.vendor_in("arm") == modeling.vendor_in("") == modeling.vendor_in("NotAuthenticAMDx") == ""
    assert modeling.convolutions_pay_for_fp32_linears("AuthenticAMD")
    for other in ("GenuineIntel", "HygonGenuine", ""):
        assert not modeling.convolutions_pay_for_fp32_linears(other)
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        with open("/proc/cpuinfo") as f:
            listed = {line.split(":", 1)[1].strip() for line in f if line.startswith("vendor_id")}
        known = listed & set(modeling.X86_VENDORS)  # none under an emulator (an ARM host's list) or another vendor
        assert known == ({modeling.cpu_vendor()} - {""})
        assert modeling.FP32_LINEARS_AS_CONVOLUTIONS == (known == {"AuthenticAMD"})


def test_initial_spread_of_every_parameter_matches_timms():
    """The original Swin's init (timm's): trunc normal 0.02 for linears and bias tables, LayerNorm 1/0, and
    PyTorch's own init for the patch-embedding convolution. Compared tensor by tensor, by name, on a freshly
    built timm model converted to our layout."""
    timm = pytest.importorskip("timm")
    from swin_tiny_hf.convert import convert_state_dict, timm_swin_kwargs

    torch.manual_seed(0)
    config = SwinTinyConfig()
    ours = SwinTinyForImageClassification(config).state_dict()
    reference = timm.models.swin_transformer.SwinTransformer(**timm_swin_kwargs(config))
    theirs = convert_state_dict(reference.state_dict(), "timm")
    assert set(ours) == set(theirs)
    for name, tensor in ours.items():
        other = theirs[name].float()
        if other.std() == 0:  # constant: LayerNorm 1 and 0, zero biases
            assert torch.equal(tensor, other), name
            continue
        # the std of n samples is within a few 1/sqrt(2n) of the truth; the smallest tensors have 96 entries
        tolerance = 0.1 if tensor.numel() >= 1000 else 0.3
        assert abs(float(tensor.std() / other.std()) - 1) < tolerance, (name, float(tensor.std()), float(other.std()))
        assert abs(float(tensor.mean() - other.mean())) < 0.3 * float(other.std()), name
    # the patch embedding is not trunc normal 0.02: PyTorch's Kaiming uniform, bound 1/sqrt(fan_in = 3 * 4 * 4)
    conv = ours["swin.embeddings.projection.weight"]
    assert float(conv.abs().max()) <= 48**-0.5 and float(conv.std()) > 0.06


def test_hidden_states_and_attentions_are_the_tensors_the_computation_uses(config, pixel_values):
    """retain_grad() on an output gets its gradient (attribution on attention maps and hidden states works)."""
    model = perturbed(SwinTinyForImageClassification(config))
    out = model(pixel_values, output_hidden_states=True, output_attentions=True)
    for tensor in out.hidden_states + out.attentions:
        tensor.retain_grad()
    out.logits[:, 1].sum().backward()
    for tensor in out.hidden_states + out.attentions:
        assert tensor.grad is not None and tensor.grad.abs().sum() > 0
    # the last hidden state's gradient is that of the head (final norm, pooling, classifier) applied to it
    tokens = out.hidden_states[-1].detach().requires_grad_()
    head = model.classifier(model.swin.norm(tokens).mean(dim=1))[:, 1].sum()
    (expected,) = torch.autograd.grad(head, tokens)
    torch.testing.assert_close(out.hidden_states[-1].grad, expected)


onednn = pytest.mark.skipif(
    not modeling.onednn_linear_available(), reason="this PyTorch has no oneDNN fused linear (not an x86 build)"
)


def count_onednn_linears(monkeypatch) -> list[str]:
    """The activation of every oneDNN fused linear the model runs from now on ("none" or "gelu")."""
    calls = []
    run = modeling.onednn_linear

    def counted(x, linear, dtype, activation="none"):
        calls.append(activation)
        return run(x, linear, dtype, activation)

    monkeypatch.setattr(modeling, "onednn_linear", counted)
    return calls


@onednn
@pytest.mark.parametrize("precision", ["fp32", "bf16 autocast", "bf16 weights"])
def test_cpu_inference_runs_the_linears_on_onednn_with_gelu_fused_and_the_same_logits(
    config, pixel_values, monkeypatch, precision
):
    """Under no_grad on the CPU every map linear runs as oneDNN's fused linear, fc1 with its GELU: 4 a block
    (qkv, proj, fc1 + GELU, fc2) and one a patch merging. The logits are those of PyTorch's own path (the same model
    with gradients on), to fp32's rounding in fp32; in bf16 as far from fp32's as PyTorch's own bf16 path is."""
    model = perturbed(SwinTinyForImageClassification(config))
    reference = model(pixel_values).logits.detach()  # fp32, gradients on: PyTorch's path
    if precision == "bf16 weights":
        model, pixel_values = model.to(torch.bfloat16), pixel_values.to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16 autocast"):
        plain = model(pixel_values).logits.detach().float()
        calls = count_onednn_linears(monkeypatch)
        with torch.no_grad():
            fused = model(pixel_values).logits.float()
    blocks, merges = sum(config.depths), len(config.depths) - 1
    assert calls.count("gelu") == blocks and calls.count("none") == 3 * blocks + merges
    if precision == "fp32":
        torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    else:
        plain_error = (plain - reference).abs().max().item()
        assert 0 < (fused - reference).abs().max().item() <= 1.5 * plain_error + 1e-3


@onednn
def test_the_fused_path_is_never_taken_where_a_gradient_hook_or_adapter_needs_pytorchs(
    config, pixel_values, monkeypatch
):
    """Gradients to compute (training, or a frozen model with one trainable bias), oneDNN switched off, a graph
    traced: PyTorch's path. A forward hook on fc1 still sees fc1's own output (GELU not fused into it); a frozen
    model under no gradients takes oneDNN."""
    model = perturbed(SwinTinyForImageClassification(config))
    calls = count_onednn_linears(monkeypatch)
    model(pixel_values).logits.sum().backward()  # gradients on, parameters need them
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    fc1 = model.swin.stages[0].blocks[0].mlp.fc1
    fc1.bias.requires_grad_(True)  # BitFit-style: one trainable bias
    model(pixel_values).logits.sum().backward()
    # oneDNN up to fc1 (its block's qkv and proj); from fc1 on every activation needs a gradient
    assert fc1.bias.grad is not None and calls == ["none", "none"]
    calls.clear()
    with warnings.catch_warnings():  # torch's own notes on its flags (TF32 on Intel GPUs) and on jit's deprecation
        warnings.simplefilter("ignore")
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            model(pixel_values)
        with torch.no_grad():
            torch.jit.trace(model.swin.stages[0].blocks[0].mlp, torch.randn(1, 16, 16, 16), check_trace=False)
    assert calls == []
    seen = []
    fc1.register_forward_hook(lambda module, args, output: seen.append(output))
    with torch.no_grad():
        model(pixel_values)
    assert len(seen) == 1 and seen[0].min() < -0.2  # before GELU (whose minimum is -0.17)
    assert calls.count("gelu") == sum(config.depths) - 1


@onednn
def test_the_fused_path_keeps_what_offloading_forward_ad_and_other_dtypes_need(config, pixel_values, monkeypatch):
    """Cases found by a review, each gave other numbers or crashed on the fused path: accelerate's offloading (its
    hook on the instance's forward brings fc1's weights from the meta device: skipping it read no data), a
    wrapped fc1, forward-mode AD (the op has no derivative: the tangent was lost), a float64 model under bf16
    autocast (autocast leaves it in float64). Each now gives PyTorch's own path's result; so does bf16 where oneDNN
    has no bf16 kernels."""
    import copy

    import accelerate
    import torch.autograd.forward_ad as forward_ad

    model = perturbed(SwinTinyForImageClassification(config))
    reference = model(pixel_values).logits.detach()  # gradients on: PyTorch's path
    offloaded = accelerate.cpu_offload(copy.deepcopy(model), execution_device=torch.device("cpu"))
    assert offloaded.swin.stages[0].blocks[0].mlp.fc1.weight.device.type == "meta"
    wrapped = copy.deepcopy(model)
    wrapped.swin.stages[0].blocks[0].mlp.fc1 = torch.nn.Sequential(wrapped.swin.stages[0].blocks[0].mlp.fc1)
    with torch.no_grad():
        for other in (offloaded, wrapped):
            torch.testing.assert_close(other(pixel_values).logits, reference, atol=1e-5, rtol=1e-5)
    # forward-mode AD under no_grad, as torch.func.jvp and dual tensors use it: the tangent of the logits
    model.set_attn_implementation("eager")  # SDPA has no forward-mode derivative
    direction = torch.randn_like(pixel_values)
    with torch.no_grad(), forward_ad.dual_level(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's first make_dual loads its jvp rules with jit.script
        tangent = forward_ad.unpack_dual(model(forward_ad.make_dual(pixel_values, direction)).logits).tangent
    _, expected = torch.func.jvp(lambda x: model(x).logits, (pixel_values,), (direction,))
    assert tangent is not None and expected.abs().max() > 1e-3
    torch.testing.assert_close(tangent, expected, atol=1e-5, rtol=1e-4)
    # a CPU without oneDNN's bf16 kernels (AVX2 only): bf16 keeps PyTorch's path, fp32 still takes oneDNN
    calls = count_onednn_linears(monkeypatch)
    monkeypatch.setattr(modeling, "onednn_bf16_supported", lambda: False)
    with torch.no_grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(pixel_values)
        copy.deepcopy(model).to(torch.bfloat16)(pixel_values.to(torch.bfloat16))
        assert calls == []
        model(pixel_values)
    assert calls.count("gelu") == sum(config.depths)
    double = model.double()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = double(pixel_values.double()).logits
    assert logits.dtype == torch.float64
    torch.testing.assert_close(logits.float(), reference, atol=1e-5, rtol=1e-5)


@onednn
def test_a_pytorch_without_the_private_state_read_keeps_pytorchs_path(config, pixel_values, monkeypatch):
    """The dual level and the functorch level are private PyTorch state: where a version lacks them (this file also
    runs as remote code, under the user's PyTorch), the model keeps PyTorch's path rather than risk a lost tangent."""
    import torch.autograd.forward_ad as forward_ad

    model = perturbed(SwinTinyForImageClassification(config))
    calls = count_onednn_linears(monkeypatch)
    assert not modeling.derivative_transform_active()
    monkeypatch.delattr(forward_ad, "_current_level")
    assert modeling.derivative_transform_active()
    with torch.no_grad():
        model(pixel_values)
    assert calls == []

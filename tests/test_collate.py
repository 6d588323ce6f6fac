import pytest
import torch

from swin_tiny_hf.training.collate import MixupCutmixCollator, eval_collate, mixing_enabled, smooth_one_hot

K = 4


def examples(batch=4, size=8):
    generator = torch.Generator().manual_seed(0)
    return [
        {"pixel_values": torch.rand(3, size, size, generator=generator), "labels": i % K, "row": 10 + i}
        for i in range(batch)
    ]


def test_smooth_one_hot_closed_form():
    targets = smooth_one_hot(torch.tensor([2, 0]), 4, 0.05)
    expected = torch.tensor([[0.0125, 0.0125, 0.9625, 0.0125], [0.9625, 0.0125, 0.0125, 0.0125]])
    torch.testing.assert_close(targets, expected)
    torch.testing.assert_close(targets.sum(-1), torch.ones(2))


def test_mixing_is_off_in_the_first_and_last_epochs():
    on = [mixing_enabled(e, 20, off_first_epochs=1, off_last_epochs=10) for e in range(20)]
    assert on == [False] + [True] * 9 + [False] * 10


def test_no_mixing_gives_smoothed_hard_targets():
    batch = examples()
    out = MixupCutmixCollator(K, mixup_prob=0.0, cutmix_prob=0.0, label_smoothing=0.1, off_first_epochs=0)(batch)
    torch.testing.assert_close(out["pixel_values"], torch.stack([e["pixel_values"] for e in batch]))
    torch.testing.assert_close(out["labels"], smooth_one_hot(torch.tensor([0, 1, 2, 3]), K, 0.1))


def test_mixup_targets_match_the_hand_computed_mix():
    batch = examples()
    collator = MixupCutmixCollator(K, mixup_prob=1.0, cutmix_prob=0.0, label_smoothing=0.05, off_first_epochs=0)
    out = collator(batch)
    x = torch.stack([e["pixel_values"] for e in batch])
    partner = x.roll(1, 0)  # torchvision mixes each sample with the previous one
    # pixels = lam * x + (1 - lam) * partner: solve for lam by least squares
    lam = ((out["pixel_values"] - partner) * (x - partner)).sum() / ((x - partner) ** 2).sum()
    torch.testing.assert_close(out["pixel_values"], lam * x + (1 - lam) * partner)
    labels = torch.tensor([0, 1, 2, 3])
    expected = lam * smooth_one_hot(labels, K, 0.05) + (1 - lam) * smooth_one_hot(labels.roll(1), K, 0.05)
    torch.testing.assert_close(out["labels"], expected)
    assert 0 < lam < 1


def test_cutmix_targets_match_the_pasted_area():
    batch = examples(size=16)
    collator = MixupCutmixCollator(K, mixup_prob=0.0, cutmix_prob=1.0, label_smoothing=0.0, off_first_epochs=0)
    out = collator(batch)
    x = torch.stack([e["pixel_values"] for e in batch])
    pasted = (out["pixel_values"] != x).any(dim=1)[0]  # (H, W) region taken from the partner image
    lam = 1.0 - pasted.float().mean()
    labels = torch.tensor([0, 1, 2, 3])
    expected = lam * smooth_one_hot(labels, K, 0.0) + (1 - lam) * smooth_one_hot(labels.roll(1), K, 0.0)
    torch.testing.assert_close(out["labels"], expected)
    torch.testing.assert_close(out["pixel_values"][:, :, pasted], x.roll(1, 0)[:, :, pasted])


def test_mixing_is_seeded_by_the_batch_and_off_in_the_first_epoch():
    collator = MixupCutmixCollator(
        K, mixup_prob=0.5, cutmix_prob=0.5, off_first_epochs=1, num_epochs=5, off_last_epochs=1, seed=1
    )
    batch = examples()
    first_epoch = collator(batch)
    torch.testing.assert_close(first_epoch["pixel_values"], torch.stack([e["pixel_values"] for e in batch]))
    collator.set_epoch(1)
    a, b = collator(batch), collator(batch)
    torch.testing.assert_close(a["labels"], b["labels"], rtol=0, atol=0)
    assert not torch.equal(a["labels"], first_epoch["labels"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(mixup_prob=0.7, cutmix_prob=0.5), "mixup_prob \\+ cutmix_prob must be at most 1"),
        (dict(label_smoothing=1.5), "label_smoothing must lie in \\[0, 1\\]"),
        (dict(mixup_alpha=0.0), "mixup_alpha must be positive"),
    ],
)
def test_bad_collator_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MixupCutmixCollator(K, **kwargs)


def test_eval_collate_keeps_hard_labels():
    out = eval_collate(examples())
    assert out["labels"].dtype == torch.long and out["labels"].tolist() == [0, 1, 2, 3]
    assert out["pixel_values"].shape == (4, 3, 8, 8)

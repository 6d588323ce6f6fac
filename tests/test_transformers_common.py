"""transformers' own common model tests, run on our three models.

Every model that transformers ships passes `ModelTesterMixin`, `ConfigTester` and (for backbones)
`BackboneTesterMixin`. They ship in transformers' source distribution, not in its wheel: `transformers_suite.py`
fetches them for the installed transformers version (cached; offline after the first time). The tester below
has the shape of transformers' `tests/models/swin/test_modeling_swin.py`: a 32 px model with 16-dim embeddings,
one or two blocks per stage and 2x2 windows, so the whole suite runs on a CPU in seconds.

Where transformers' Swin test overrides a common test for a hierarchical vision model (the number of
attention maps, the sequence length of each hidden state, what the input embedding is), the override here
asserts the same properties for our outputs (`VisionOverrides`). Tests that cannot apply to this model are
listed in `NOT_APPLICABLE` with the reason; everything else in the mixins runs as transformers wrote it.
`PipelineTesterMixin` is not mixed in: its tests load tiny models from the Hub, listed in a file that is not in
the sdist, and skip offline; test_hub.py runs `pipeline("image-classification")` on our saved models.

Set SWIN_TINY_HF_COMPARE_TRANSFORMERS_SWIN=1 to also run the plain mixins (no overrides, the same skips) on
ours and on transformers' own Swin with the same tester sizes, for counts of how each fares in one run.
"""

from __future__ import annotations

import os
import unittest

import torch

from swin_tiny_hf import SwinTinyBackbone, SwinTinyConfig, SwinTinyForImageClassification, SwinTinyModel

from transformers_suite import common_tests

suite = common_tests()
from transformers_common_tests.test_backbone_common import BackboneTesterMixin  # noqa: E402
from transformers_common_tests.test_configuration_common import ConfigTester  # noqa: E402
from transformers_common_tests.test_modeling_common import ModelTesterMixin, floats_tensor, ids_tensor  # noqa: E402

# The mixins know a model's task from transformers' name mappings (a base model gets no labels, a classifier gets
# class ids). Our classes are registered with the Auto classes at run time, not in those static tables, so the
# common test module is given copies of the tables that list them, as they would if the model were in
# transformers. transformers' own tables are not touched.
for table, class_name in {
    "MODEL_MAPPING_NAMES": "SwinTinyModel",
    "MODEL_FOR_BACKBONE_MAPPING_NAMES": "SwinTinyBackbone",
    "MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES": "SwinTinyForImageClassification",
}.items():
    setattr(suite.test_modeling_common, table, {**getattr(suite.test_modeling_common, table), "swin_tiny": class_name})

# Tests of the mixins that cannot apply to this model, with the reason. Each is skipped by name.
NOT_APPLICABLE = {
    "test_inputs_embeds": "an image model: there are no token embeddings to pass instead of pixel_values",
    "test_feed_forward_chunking": "Swin's MLP is not chunked (chunk_size_feed_forward is a text-model option)",
    "test_multi_gpu_data_parallel_forward": "needs two GPUs (CI and development machines have none)",
}


class SwinTinyModelTester:
    """Tiny sizes, as transformers' SwinModelTester: 32 px, patch 2 (16x16 tokens), stages of 16, 8 and 4 tokens a
    side with 2x2 windows, so every stage has a shifted block where it has two blocks."""

    def __init__(self, parent, batch_size=13, image_size=32, num_labels=10):
        self.parent = parent
        self.batch_size = batch_size
        self.image_size = image_size
        self.patch_size = 2
        self.num_channels = 3
        self.embed_dim = 16
        self.depths = [1, 2, 1]
        self.num_heads = [2, 2, 4]
        self.window_size = 2
        self.mlp_ratio = 2.0
        self.num_labels = num_labels
        self.is_training = True
        self.out_features = ["stage1", "stage2"]
        self.out_indices = [1, 2]
        self.hidden_size = self.embed_dim * 2 ** (len(self.depths) - 1)

    config_class = SwinTinyConfig

    def get_config(self):
        return self.config_class(
            image_size=self.image_size,
            patch_size=self.patch_size,
            num_channels=self.num_channels,
            embed_dim=self.embed_dim,
            depths=self.depths,
            num_heads=self.num_heads,
            window_size=self.window_size,
            mlp_ratio=self.mlp_ratio,
            drop_path_rate=0.1,
            num_labels=self.num_labels,
            out_features=self.out_features,
            out_indices=self.out_indices,
        )

    def prepare_config_and_inputs(self):
        pixel_values = floats_tensor([self.batch_size, self.num_channels, self.image_size, self.image_size])
        labels = ids_tensor([self.batch_size], self.num_labels)
        return self.get_config(), pixel_values, labels

    def prepare_config_and_inputs_for_common(self):
        config, pixel_values, _ = self.prepare_config_and_inputs()
        return config, {"pixel_values": pixel_values}


def skip_not_applicable(cls):
    for name, reason in NOT_APPLICABLE.items():
        setattr(cls, name, unittest.skip(reason)(lambda self: None))
    return cls


class VisionOverrides:
    """The common tests that transformers' Swin test overrides for a hierarchical vision model, asserting the same
    for our outputs: hidden_states are the patch embedding then each stage's output (one more than the stages,
    tokens of (H/p)^2 / 4^i each); attentions hold one map per block (B, nW, heads, N, N), rows summing to 1; the
    input embedding is the patch embedding (a module, not an `nn.Embedding`) and there is no output embedding."""

    def test_model_get_set_embeddings(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            model = model_class(config).eval()
            embeddings = model.get_input_embeddings()
            self.assertIsInstance(embeddings, torch.nn.Conv2d)  # pixels -> patch embeddings
            self.assertEqual(embeddings.in_channels, config.num_channels)
            self.assertIsNone(model.get_output_embeddings())
            # a replacement is what the model then uses: all-zero embeddings give a constant first hidden state
            zero = torch.nn.Conv2d(config.num_channels, config.embed_dim, config.patch_size, config.patch_size)
            torch.nn.init.zeros_(zero.weight)
            torch.nn.init.zeros_(zero.bias)
            model.set_input_embeddings(zero)
            self.assertIs(model.get_input_embeddings(), zero)
            with torch.no_grad():
                first = model(**inputs_dict, output_hidden_states=True).hidden_states[0]
            torch.testing.assert_close(first, torch.zeros_like(first))  # LayerNorm of zeros: its bias, 0

    def expected_hidden_state_shapes(self, config):
        side = config.image_size // config.patch_size
        shapes = [(side * side, config.embed_dim)]
        for i in range(len(config.depths)):
            shapes.append(((side // 2**i) ** 2, config.embed_dim * 2**i))
        return shapes

    def test_hidden_states_output(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        for model_class in self.all_model_classes:
            for from_config in (False, True):
                inputs = dict(inputs_dict)
                config.output_hidden_states = from_config
                if not from_config:
                    inputs["output_hidden_states"] = True
                model = model_class(config).to(torch.device("cpu")).eval()
                with torch.no_grad():
                    outputs = model(**self._prepare_for_class(inputs, model_class))
                shapes = [tuple(h.shape[1:]) for h in outputs.hidden_states]
                self.assertEqual(shapes, self.expected_hidden_state_shapes(config))
            config.output_hidden_states = False

    def test_attention_outputs(self):
        config, inputs_dict = self.model_tester.prepare_config_and_inputs_for_common()
        window = config.window_size[0]
        for model_class in self.all_model_classes:
            model = model_class._from_config(config, attn_implementation="eager").eval()
            with torch.no_grad():
                outputs = model(**inputs_dict, output_attentions=True, output_hidden_states=False)
                length = len(outputs)
                both = model(**inputs_dict, output_attentions=True, output_hidden_states=True)
            attentions = outputs.attentions
            self.assertEqual(len(attentions), sum(config.depths))  # one per block
            self.assertEqual(tuple(attentions[0].shape[-3:]), (config.num_heads[0], window**2, window**2))
            for attention in attentions:
                torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))
            # attentions come last, after the hidden states that the second call adds
            self.assertEqual(len(both), length + 1)
            for a, b in zip(both.attentions, attentions):
                torch.testing.assert_close(a, b)
            # also from the config
            config.output_attentions = True
            model = model_class(config).eval()
            with torch.no_grad():
                self.assertEqual(len(model(**inputs_dict).attentions), sum(config.depths))
            config.output_attentions = False


@skip_not_applicable
class SwinTinyModelTest(VisionOverrides, ModelTesterMixin, unittest.TestCase):
    all_model_classes = (SwinTinyModel, SwinTinyBackbone, SwinTinyForImageClassification)
    test_resize_embeddings = False  # no token embeddings to resize (as transformers' Swin test)
    # transformers runs this test only on models it added from 2023 on, read off the copyright year of the
    # config's file, which ours does not have; the test applies, so it runs.
    test_can_init_all_missing_weights_before_2023 = True

    def setUp(self):
        self.model_tester = SwinTinyModelTester(self)
        self.config_tester = ConfigTester(
            self,
            config_class=SwinTinyConfig,
            # transformers' Swin test passes 37, which our config refuses (37 channels cannot split into 2 heads)
            embed_dim=48,
            has_text_modality=False,
            common_properties=["image_size", "patch_size", "num_channels"],
        )

    def test_config(self):
        self.config_tester.run_common_tests()


class SwinTinyBackboneTest(BackboneTesterMixin, unittest.TestCase):
    all_model_classes = (SwinTinyBackbone,)
    config_class = SwinTinyConfig

    def setUp(self):
        self.model_tester = SwinTinyModelTester(self)


if os.environ.get("SWIN_TINY_HF_COMPARE_TRANSFORMERS_SWIN"):
    from transformers import SwinBackbone, SwinConfig, SwinForImageClassification, SwinModel

    class TransformersSwinTester(SwinTinyModelTester):
        config_class = SwinConfig  # the same sizes; SwinConfig takes the same argument names

    @skip_not_applicable
    class PlainSwinTinyModelTest(ModelTesterMixin, unittest.TestCase):
        all_model_classes = SwinTinyModelTest.all_model_classes
        test_resize_embeddings = False
        test_can_init_all_missing_weights_before_2023 = True
        setUp = SwinTinyModelTest.setUp
        test_config = SwinTinyModelTest.test_config

    @skip_not_applicable
    class PlainTransformersSwinModelTest(ModelTesterMixin, unittest.TestCase):
        all_model_classes = (SwinModel, SwinBackbone, SwinForImageClassification)
        test_resize_embeddings = False
        test_can_init_all_missing_weights_before_2023 = True

        def setUp(self):
            self.model_tester = TransformersSwinTester(self)
            self.config_tester = ConfigTester(
                self, config_class=SwinConfig, embed_dim=37, has_text_modality=False, common_properties=[]
            )

        def test_config(self):
            self.config_tester.run_common_tests()

    class TransformersSwinBackboneTest(BackboneTesterMixin, unittest.TestCase):
        all_model_classes = (SwinBackbone,)
        config_class = SwinConfig

        def setUp(self):
            self.model_tester = TransformersSwinTester(self)

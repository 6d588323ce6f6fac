"""Every way of setting a config field, checked against itself and against transformers' own `SwinConfig`.

A field can be set through the constructor, its alias (`num_attention_heads` for `num_heads`), `from_pretrained(folder,
**overrides)`, `from_dict(d, **overrides)`, assignment after construction, and comes back through a `to_dict` round
trip. For values drawn by hypothesis, every way must give the same config or the same `ValueError` (naming the field
and the value); where `SwinConfig` accepts a value that ours accepts too, the two agree on the resulting attributes.
Where they differ on purpose, the test says so (`SwinConfig` leaves derived attributes stale on some ways).

The label fields (`id2label`, `label2id`, `num_labels`, `wordnet_ids`) name one label set: a new head replaces all of
them, and every folder the package saves loads again.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import SwinConfig

from swin_tiny_hf import SwinTinyConfig, SwinTinyForImageClassification, save_model_and_processor
from swin_tiny_hf.imagenet_classes import IMAGENET_1K_WORDNET_IDS, label_config

from conftest import perturbed, tiny_config

# Valid for both classes (SwinConfig's window_size is an int); 3 generic labels, as num_labels=3 gives.
BASE = dict(
    image_size=32,
    patch_size=2,
    embed_dim=16,
    depths=[1, 1, 1],
    num_heads=[1, 2, 4],
    window_size=4,
    mlp_ratio=2.0,
    drop_path_rate=0.1,
    num_labels=3,
)
LABEL_FIELDS = ("id2label", "label2id", "num_labels")
ALIASES = {"num_heads": "num_attention_heads"}

small_ints = st.integers(-1, 66)
odd_values = st.sampled_from([2.0, True, "4", None])
numbers = st.one_of(st.floats(-0.5, 1.5, allow_nan=False), st.integers(-1, 2), st.sampled_from(["0.1", None]))
int_lists = st.lists(st.integers(-1, 9), max_size=4)
names = st.sampled_from(["cat", "dog", "fish", "LABEL_0", "LABEL_1"])
FIELD_VALUES = {
    "image_size": st.one_of(small_ints, odd_values),
    "patch_size": st.one_of(st.integers(-1, 9), odd_values),
    "num_channels": st.one_of(st.integers(-1, 4), odd_values),
    "embed_dim": st.one_of(st.sampled_from([8, 12, 16, 20, 32]), small_ints, odd_values),
    "depths": st.one_of(int_lists, st.just(3)),
    "num_heads": st.one_of(int_lists, st.sampled_from([[1, 2, 4], [2, 4, 8], [5, 5, 5], [1, 1, 1]])),
    "window_size": st.one_of(st.integers(-1, 17), int_lists, odd_values),
    "mlp_ratio": numbers,
    "drop_path_rate": numbers,
    "hidden_dropout_prob": numbers,
    "attention_probs_dropout_prob": numbers,
    "layer_norm_eps": numbers,
    "initializer_range": numbers,
    "qkv_bias": st.sampled_from([True, False, 1, None]),
    "num_labels": st.one_of(st.integers(-1, 6), odd_values),
    "id2label": st.one_of(
        st.lists(names, min_size=1, max_size=4, unique=True).map(lambda n: dict(enumerate(n))),
        st.sampled_from([{}, {1: "a"}, {"0": "a", "1": "b"}, ["a"], {"x": "a"}]),
    ),
    "label2id": st.one_of(
        st.lists(names, min_size=1, max_size=4, unique=True).map(lambda n: {name: i for i, name in enumerate(n)}),
        st.sampled_from([{"a": 1}, {"a": "0"}, {"a": "x"}, "a"]),
    ),
    "problem_type": st.sampled_from([None, "regression", "single_label_classification", "multi_label_classification"])
    | st.sampled_from(["foo", 1]),
    "out_features": st.one_of(
        st.lists(st.sampled_from(["stem", "stage1", "stage2", "stage3", "stage4"]), max_size=3), st.just("stage1")
    ),
    "out_indices": st.one_of(st.lists(st.integers(-5, 4), max_size=3), st.just(1)),
    "hidden_size": st.sampled_from([64, 128, 5]),
    "num_hidden_layers": st.integers(1, 4),
}
WAYS = ("constructor", "alias", "from_pretrained", "from_dict", "assignment", "update", "to_dict round trip")


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """BASE saved by each class, for `from_pretrained(folder, **overrides)`."""
    saved = {}
    for cls in (SwinTinyConfig, SwinConfig):
        folder = tmp_path_factory.mktemp(cls.__name__)
        cls(**BASE).save_pretrained(folder)
        saved[cls] = folder
    return saved


def constructor_arguments(name: str, value) -> dict:
    """BASE with name=value; a label field comes without BASE's num_labels (both name the label set)."""
    base = {k: v for k, v in BASE.items() if not (name in LABEL_FIELDS and k == "num_labels")}
    return {**base, name: value}


def set_by(cls, way: str, name: str, value, folder):
    """A config of `cls` with `name` set to `value` in one of the ways a user can; the ValueError if refused."""
    try:
        with torch.no_grad():
            if way == "constructor":
                return cls(**constructor_arguments(name, value))
            if way == "alias":
                arguments = constructor_arguments(name, value)
                arguments[ALIASES[name]] = arguments.pop(name)
                return cls(**arguments)
            if way == "from_pretrained":
                return cls.from_pretrained(folder, **{name: value})
            if way == "from_dict":
                return cls.from_dict(cls(**BASE).to_dict(), **{name: value})
            if way in ("assignment", "update"):
                config = cls(**BASE)
                setattr(config, name, value) if way == "assignment" else config.update({name: value})
                return config
            if way == "to_dict round trip":
                return cls.from_dict(json.loads(cls(**constructor_arguments(name, value)).to_json_string()))
    except ValueError as error:
        return error
    raise AssertionError(way)


def attributes(config) -> dict:
    """What a config says the model is: every field of ours (lists as lists), the labels and the derived sizes."""
    names = [n for n in SwinTinyConfig.__annotations__ if not n.startswith("_")]
    names += ["num_labels", "id2label", "label2id", "problem_type", "hidden_size", "num_layers", "stage_names"]
    names += ["out_features", "out_indices"]
    return {n: getattr(config, n) for n in names}


def consistent_label2id(config) -> bool:
    label2id = config.label2id
    return label2id is not None and {name: int(i) for name, i in label2id.items()} == {
        name: i for i, name in config.id2label.items()
    }


def kept_label2id(config, label2id) -> bool:
    """Whether a SwinConfig took the label2id it was given, as the inverse of its id2label."""
    return config.label2id == label2id and consistent_label2id(config)


def assert_names_field_and_value(error: ValueError, name: str, value) -> None:
    message = str(error)
    field_names = {name, ALIASES.get(name, name)}
    assert any(n in message for n in field_names), (name, message)
    value_forms = {repr(value), str(value)}
    if isinstance(value, (list, tuple)):
        value_forms |= {f"[{i}]={v!r}" for i, v in enumerate(value)}
    if isinstance(value, dict):
        value_forms |= {repr(dict(value))}
    assert any(form in message for form in value_forms), (value, message)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_every_way_of_setting_a_field_agrees_and_matches_swin_config(folders, data, caplog):
    name = data.draw(st.sampled_from(sorted(FIELD_VALUES)), label="field")
    value = data.draw(FIELD_VALUES[name], label="value")
    ways = [w for w in WAYS if w != "alias" or name in ALIASES]
    with caplog.at_level(logging.ERROR):  # label2id replaced, unknown keys: warnings, not what is tested here
        ours = {way: set_by(SwinTinyConfig, way, name, value, folders[SwinTinyConfig]) for way in ways}
    reference = ours["constructor"]
    if isinstance(reference, ValueError):
        assert_names_field_and_value(reference, name, value)
        for way, result in ours.items():  # the same rule and the same message, whichever way it was set
            assert isinstance(result, ValueError) and str(result) == str(reference), (way, result)
        return
    for way, result in ours.items():
        assert not isinstance(result, ValueError), (way, result)
        assert attributes(result) == attributes(reference), way
        assert consistent_label2id(result)  # derived label metadata follows the labels
    # transformers' SwinConfig, where it accepts the value (it raises StrictDataclassFieldValidationError, which is
    # no ValueError, for types it refuses; it refuses a window_size list, which ours takes as one window per stage)
    theirs = {}
    for way in ways:
        try:
            theirs[way] = set_by(SwinConfig, way, name, value, folders[SwinConfig])
        except Exception as error:  # noqa: BLE001  (SwinConfig's own refusals are not what is checked here)
            theirs[way] = error
    constructed = theirs["constructor"]
    # SwinConfig(label2id=...) without id2label ignores the value (2 generic labels); ours derives id2label from it
    if not isinstance(constructed, Exception) and (name != "label2id" or kept_label2id(constructed, value)):
        mine = attributes(reference)
        shared = ["num_labels", "id2label", "problem_type", "hidden_size", "num_layers", "stage_names"]
        shared += ["out_features", "out_indices", *[n for n in BASE if n != "num_labels"], field_of(name)]
        for attribute in dict.fromkeys(shared):
            expected = _as_ours(attribute, getattr(constructed, attribute), constructed)
            assert mine[attribute] == expected, (attribute, mine[attribute], expected)
        if consistent_label2id(constructed):  # SwinConfig(id2label=...) leaves label2id None; ours derives it
            assert mine["label2id"] == constructed.label2id
    for way, result in theirs.items():
        # SwinConfig's other ways leave hidden_size, num_layers and label2id as they were (stale); the field set and
        # the labels agree with ours
        if isinstance(result, Exception) or (name == "label2id" and not kept_label2id(result, value)):
            continue
        checked = [field_of(name), "id2label", "num_labels"] if name in LABEL_FIELDS else [field_of(name)]
        for attribute in checked:
            expected = _as_ours(attribute, getattr(result, attribute), result)
            assert attributes(ours[way])[attribute] == expected, (way, attribute)


def field_of(name: str) -> str:
    """The attribute that `name` sets (num_hidden_layers is another name for num_layers)."""
    return SwinTinyConfig.attribute_map.get(name, name)


def _as_ours(attribute: str, value, config):
    """A SwinConfig attribute in our form: lists as lists, an int window as one per stage, id2label's keys as ints
    (SwinConfig turns string keys into ints in its constructor only: set as an attribute or passed to
    `from_pretrained`, {"0": "a"} stays as it is; ours turns them into ints whichever way they are set)."""
    if attribute == "window_size" and isinstance(value, int):
        return [value] * len(config.depths)
    if attribute == "id2label" and isinstance(value, dict):
        return {int(key): label for key, label in value.items()}
    return list(value) if isinstance(value, tuple) else value


# ------------------------------------------------------------------------------------------------ item 6, by example
@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_attention_heads=[5, 5, 5]), "num_heads[0]=5 does not divide the stage's channels"),
        (dict(drop_path_rate=1.5), "drop_path_rate=1.5 must satisfy 0 <= drop_path_rate < 1"),
        (dict(window_size=3), "window_size[0]=3 does not divide the stage resolution 16"),
        (dict(window_size="8"), "window_size='8' must be a positive integer (every stage) or a list"),
        (dict(num_hidden_layers=4), "num_hidden_layers=4 disagrees with the fields"),
        (dict(hidden_size=5), "hidden_size=5 disagrees with the fields"),
        (dict(num_labels=0), "num_labels=0 must be a positive integer"),
        (dict(problem_type="regresion"), "problem_type='regresion' must be one of"),
        (dict(mlp_ratio="4"), "mlp_ratio='4' must be a number"),
        (dict(out_features=["stage9"]), "out_features=['stage9'] names ['stage9'], which this model does not have"),
    ],
)
def test_a_bad_value_is_refused_the_same_way_everywhere(tmp_path, overrides, message):
    """The constructor, from_pretrained (config and model: train.py's --model_name_or_path F --window_size 3 relies on
    it), from_dict and assignment give one ValueError with one message; a refused assignment changes nothing."""
    tiny_config().save_pretrained(tmp_path)
    ((name, value),) = overrides.items()
    base = tiny_config().to_dict()
    # tiny_config's arguments, less the field the alias names (both given and different are refused as ambiguous)
    without_the_field = {k: v for k, v in base.items() if k in SwinTinyConfig.__annotations__ and k != field_of(name)}
    attempts = {
        "constructor": lambda: SwinTinyConfig(**{**without_the_field, **overrides}),
        "config.from_pretrained": lambda: SwinTinyConfig.from_pretrained(tmp_path, **overrides),
        "model.from_pretrained": lambda: SwinTinyForImageClassification.from_pretrained(tmp_path, **overrides),
        "from_dict": lambda: SwinTinyConfig.from_dict(base, **overrides),
        "assignment": lambda: setattr(config, name, value),
        "update": lambda: config.update(overrides),
    }
    config = tiny_config()
    before = config.to_dict()
    for way, attempt in attempts.items():
        with pytest.raises(ValueError) as error:
            attempt()
        assert message in str(error.value), way
    assert config.to_dict() == before


def test_an_alias_sets_the_field_it_names(tmp_path):
    assert SwinTinyConfig(num_attention_heads=[3, 6, 12, 24]).num_heads == [3, 6, 12, 24]
    tiny_config().save_pretrained(tmp_path)
    assert SwinTinyConfig.from_pretrained(tmp_path, num_attention_heads=[2, 2, 4]).num_heads == [2, 2, 4]
    config = tiny_config()
    config.num_attention_heads = [2, 2, 4]
    assert config.num_heads == [2, 2, 4] and config.num_attention_heads == [2, 2, 4]
    with pytest.raises(ValueError, match=r"num_attention_heads=\[2, 2, 4\] and num_heads=\[1, 2, 4\] disagree"):
        tiny_config(num_attention_heads=[2, 2, 4])  # tiny_config gives num_heads too
    assert tiny_config(num_attention_heads=[1, 2, 4]).num_heads == [1, 2, 4]  # both, the same: one value


def test_overrides_of_a_folder_are_built_into_the_config(tmp_path):
    """window_size=8 used to stay an int (a TypeError in stage_windows); a model with an override loads and runs."""
    tiny_config().save_pretrained(tmp_path)
    config = SwinTinyConfig.from_pretrained(tmp_path, window_size=8, drop_path_rate=0.0)
    assert config.window_size == [8, 8, 8] and config.stage_windows == [8, 8, 4] and config.drop_path_rate == 0.0
    model = perturbed(SwinTinyForImageClassification(tiny_config()))
    model.save_pretrained(tmp_path / "model")
    loaded = SwinTinyForImageClassification.from_pretrained(tmp_path / "model", drop_path_rate=0.05).eval()
    assert loaded.config.drop_path_rate == 0.05
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits)  # drop path is off in eval


def test_coupled_fields_change_together_through_update():
    """One assignment is validated at once, so fields that must agree change together through update()."""
    config = tiny_config()
    with pytest.raises(ValueError, match=r"num_heads=\[1, 2, 4\] has 3 entries but depths=\[2, 2\] has 2"):
        config.depths = [2, 2]
    config.update({"depths": [2, 2], "num_heads": [1, 2], "window_size": [4, 4]})
    assert config.depths == [2, 2] and config.num_layers == 2 and config.hidden_size == 32
    assert config.stage_names == ["stem", "stage1", "stage2"] and config.out_features == ["stage2"]


def test_single_label_with_one_label_can_be_assigned_but_not_saved(tmp_path):
    """transformers refuses the pair when a config is built, not on assignment (its common test_problem_types sets
    problem_type, then num_labels=1); ours refuses to save it, since the folder would not load."""
    config = tiny_config()
    config.problem_type = "single_label_classification"
    config.num_labels = 1
    with pytest.raises(ValueError, match='problem_type="single_label_classification" requires num_labels > 1'):
        config.save_pretrained(tmp_path)
    config.problem_type = "regression"
    config.save_pretrained(tmp_path)
    assert SwinTinyConfig.from_pretrained(tmp_path).problem_type == "regression"


# ------------------------------------------------------------------------------------------------ item 5: labels
@pytest.fixture
def wordnet_folder(tmp_path):
    """A classifier of 20 ImageNet classes (readable names in id2label, the WordNet ids beside them)."""
    model = perturbed(SwinTinyForImageClassification(tiny_config(**label_config(IMAGENET_1K_WORDNET_IDS[:20]))))
    model.save_pretrained(tmp_path / "F")
    return tmp_path / "F"


def assert_one_label_set(config, id2label: dict, wordnet_ids) -> None:
    assert config.id2label == id2label and config.num_labels == len(id2label)
    assert config.label2id == {name: i for i, name in id2label.items()}
    assert config.wordnet_ids == wordnet_ids


@pytest.mark.parametrize(
    "new_head, id2label, wordnet_ids",
    [
        (dict(id2label={0: "cat", 1: "dog"}), {0: "cat", 1: "dog"}, None),
        (dict(num_labels=3), {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}, None),
        (dict(label2id={"cat": 1, "dog": 0}), {0: "dog", 1: "cat"}, None),
        (
            label_config(["n01443537", "n01629819"]),
            {0: "goldfish", 1: "European fire salamander"},
            ["n01443537", "n01629819"],
        ),
        (label_config(["cat", "dog"]), {0: "cat", 1: "dog"}, None),
    ],
)
@pytest.mark.parametrize("save", ["save_pretrained", "save_model_and_processor"])
def test_a_head_swap_saves_a_folder_that_loads(wordnet_folder, tmp_path, new_head, id2label, wordnet_ids, save):
    model = SwinTinyForImageClassification.from_pretrained(wordnet_folder, **new_head, ignore_mismatched_sizes=True)
    assert_one_label_set(model.config, id2label, wordnet_ids)
    model.eval()
    if save == "save_pretrained":
        model.save_pretrained(tmp_path / "G")
    else:
        save_model_and_processor(model, tmp_path / "G")
    loaded = SwinTinyForImageClassification.from_pretrained(tmp_path / "G").eval()
    assert_one_label_set(loaded.config, id2label, wordnet_ids)
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixels).logits, model(pixels).logits)


def test_the_same_label_count_keeps_the_names_and_ids(wordnet_folder):
    """num_labels equal to the folder's keeps its head (transformers' num_labels setter changes nothing then)."""
    config = SwinTinyConfig.from_pretrained(wordnet_folder, num_labels=20)
    assert config.id2label[1] == "goldfish" and config.wordnet_ids == IMAGENET_1K_WORDNET_IDS[:20]
    config.num_labels = 20
    assert config.wordnet_ids == IMAGENET_1K_WORDNET_IDS[:20]


@pytest.mark.parametrize(
    "name, value, id2label",
    [
        ("num_labels", 3, {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}),
        ("id2label", {0: "cat", 1: "dog"}, {0: "cat", 1: "dog"}),
        ("label2id", {"cat": 0, "dog": 1}, {0: "cat", 1: "dog"}),
    ],
)
def test_assigning_a_new_label_set_replaces_every_label_field(wordnet_folder, tmp_path, name, value, id2label):
    config = SwinTinyConfig.from_pretrained(wordnet_folder)
    setattr(config, name, value)
    assert_one_label_set(config, id2label, None)
    config.save_pretrained(tmp_path)
    assert_one_label_set(SwinTinyConfig.from_pretrained(tmp_path), id2label, None)


def test_label_fields_that_disagree_are_refused_or_repaired(caplog):
    with pytest.raises(ValueError, match=r"num_labels=3 disagrees with id2label, which names 2 classes"):
        tiny_config(id2label={0: "a", 1: "b"}, num_labels=3)
    with pytest.raises(ValueError, match=r"id2label=\{1: 'a'\} must map the class indices 0 \.\. 0"):
        tiny_config(id2label={1: "a"})
    with pytest.raises(ValueError, match=r"label2id=\{'a': 1\} must map each class name to its index 0 \.\. 0"):
        tiny_config(label2id={"a": 1})
    with caplog.at_level(logging.WARNING):  # a stale label2id (saved by older versions) loads, inverted from id2label
        config = tiny_config(id2label={0: "a", 1: "b"}, label2id={"x": 0, "y": 1})
    assert config.label2id == {"a": 0, "b": 1} and "is not the inverse of id2label" in caplog.text


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.lists(
        st.one_of(
            st.tuples(st.just("num_labels"), st.integers(1, 4)),
            st.tuples(st.just("id2label"), st.lists(names, min_size=1, max_size=4, unique=True)),
            st.tuples(st.just("label2id"), st.lists(names, min_size=1, max_size=4, unique=True)),
            st.tuples(
                st.just("label_config"),
                st.lists(st.sampled_from(IMAGENET_1K_WORDNET_IDS[:6] + ["cat"]), min_size=1, max_size=4, unique=True),
            ),
        ),
        min_size=1,
        max_size=4,
    ),
    by_assignment=st.booleans(),
)
def test_any_sequence_of_label_changes_saves_a_folder_that_loads(tmp_path, steps, by_assignment):
    """Label sets changed by assignment or by from_pretrained overrides, in any order: the fields always describe
    one label set and the saved folder loads back to the same config."""
    config = tiny_config(**label_config(IMAGENET_1K_WORDNET_IDS[:5]))
    for i, (kind, value) in enumerate(steps):
        change = (
            {"num_labels": value}
            if kind == "num_labels"
            else {"id2label": dict(enumerate(value))}
            if kind == "id2label"
            else {"label2id": {n: j for j, n in enumerate(value)}}
            if kind == "label2id"
            else label_config(value)
        )
        if by_assignment:
            config.update(change) if len(change) > 1 else setattr(config, *next(iter(change.items())))
        else:
            config.save_pretrained(tmp_path / str(i))
            config = SwinTinyConfig.from_pretrained(tmp_path / str(i), **change)
        assert config.label2id == {name: j for j, name in config.id2label.items()}
        assert config.wordnet_ids is None or len(config.wordnet_ids) == config.num_labels
        if kind == "label_config":
            assert config.wordnet_ids == change["wordnet_ids"]
    config.save_pretrained(tmp_path / "last")
    assert SwinTinyConfig.from_pretrained(tmp_path / "last").to_dict() == config.to_dict()


def test_label_config_refuses_repeated_names():
    with pytest.raises(ValueError, match=r"label names must be unique .* \['cat'\] appear more than once among the 3"):
        label_config(["cat", "dog", "cat"])


def test_two_generic_labels_survive_saving(wordnet_folder, tmp_path):
    """transformers leaves out of config.json an id2label equal to its own default (LABEL_0, LABEL_1); ours then loaded
    with its default 200 classes, and the saved 2-class model did not load (classifier size mismatch)."""
    config = tiny_config(num_labels=2)
    config.save_pretrained(tmp_path / "config")
    assert SwinTinyConfig.from_pretrained(tmp_path / "config").id2label == {0: "LABEL_0", 1: "LABEL_1"}
    model = SwinTinyForImageClassification.from_pretrained(wordnet_folder, num_labels=2, ignore_mismatched_sizes=True)
    model.save_pretrained(tmp_path / "model")
    loaded = SwinTinyForImageClassification.from_pretrained(tmp_path / "model")
    assert_one_label_set(loaded.config, {0: "LABEL_0", 1: "LABEL_1"}, None)
    torch.testing.assert_close(loaded.classifier.weight, model.classifier.weight)

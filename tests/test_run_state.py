"""The typed run state (run_state.py) and its JSON form, training_state.json."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swin_tiny_hf.training.run_state import RunState

COUNTS = st.integers(min_value=0, max_value=10**9)
ROWS = st.lists(st.dictionaries(st.sampled_from(["epoch", "val_top1", "lr"]), st.floats(0, 1)), max_size=3)


@settings(max_examples=100, deadline=None)
@given(
    steps=COUNTS,
    epoch=COUNTS,
    batches=COUNTS,
    samples=COUNTS,
    history=ROWS,
    sums=st.none() | st.lists(st.floats(0, 1e6), min_size=3, max_size=3),
    seconds=st.none() | st.floats(0, 1e4),
)
def test_a_state_survives_its_json_form(steps, epoch, batches, samples, history, sums, seconds):
    state = RunState(
        completed_steps=steps,
        epoch=epoch,
        batches_into_epoch=batches,
        samples_into_epoch=samples,
        samples_seen=samples,
        history=history,
        epoch_sums=sums,
        time_to_first_step_seconds=seconds,
    )
    assert RunState.from_json(json.loads(json.dumps(state.to_json()))) == state


def test_the_json_keys_are_the_ones_train_py_wrote_before_the_class():
    """A checkpoint written before RunState existed resumes now, and one written now by the same names."""
    before = {
        *("completed_steps", "epoch", "batches_into_epoch", "samples_into_epoch", "samples_seen", "nonfinite_run"),
        *("history", "best_top1", "bad_images", "run_id", "epoch_sums", "epoch_skipped", "dropped_at_start"),
        *("resume_changes", "time_to_first_step_seconds"),
    }
    assert set(RunState(time_to_first_step_seconds=1.0).to_json()) == before
    assert "time_to_first_step_seconds" not in RunState().to_json()  # absent until the first step, as before


def test_keys_a_newer_version_wrote_are_kept_and_the_writer_s_own_are_not_state():
    state = RunState.from_json({"completed_steps": 3, "checkpoint_sequence": 7, "ema_decay": 0.999})
    assert state.completed_steps == 3 and state.unknown == {"ema_decay": 0.999}
    assert state.to_json()["ema_decay"] == 0.999 and "checkpoint_sequence" not in state.to_json()


@pytest.mark.parametrize("value", [-1, 1.5, "3", True, None])
def test_a_count_that_is_not_a_whole_number_is_refused_naming_the_key(value):
    with pytest.raises(ValueError, match=rf"expected completed_steps a whole number >= 0, got {value!r}"):
        RunState.from_json({"completed_steps": value})


def test_a_state_file_that_is_not_an_object_is_refused():
    with pytest.raises(ValueError, match="expected a JSON object, got list"):
        RunState.from_json([1, 2])

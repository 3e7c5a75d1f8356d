"""The engine's choice of compiling vLLM: by the run's decoding steps, or as asked."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinical_distil.engines import DECODE_WAVE, EAGER_BELOW_DECODE_STEPS, eager_engine
from clinical_distil.files import InputError


@pytest.mark.parametrize("prompts, max_tokens, eager", [
    (96, 4096, True),                 # the 24-note driver run's stage A: one wave of 4,096 steps
    (322, 256, True),                 # the sample evaluation sets: two waves of 256
    (2184, 64, True),                 # the known-answer sets: nine waves of 64
    (400_000, 2048, False),           # stage A over 100,000 notes
    (256, 5_000, False), (256, 4_999, True),    # the boundary: one wave
    (257, 2_500, False), (257, 2_499, True),    # two waves
    (0, 100, True),                   # nothing to answer still starts an engine: no compiling
])
def test_auto_compiles_only_long_runs(prompts, max_tokens, eager):
    assert eager_engine("auto", prompts, max_tokens) is eager


@given(st.integers(0, 10**7), st.integers(1, 10**5))
def test_on_and_off_are_obeyed_and_auto_follows_the_steps(prompts, max_tokens):
    assert eager_engine("on", prompts, max_tokens) is False
    assert eager_engine("off", prompts, max_tokens) is True
    waves = max(1, -(-prompts // DECODE_WAVE))
    assert eager_engine("auto", prompts, max_tokens) is (waves * max_tokens < EAGER_BELOW_DECODE_STEPS)


def test_unknown_choice_is_one_line():
    with pytest.raises(InputError, match="--vllm_compile must be one of auto, on, off"):
        eager_engine("sometimes", 1, 1)

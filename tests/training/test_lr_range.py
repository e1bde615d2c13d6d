"""The learning-rate range test's pure parts (the ramp, the smoothing, the stop, the suggestion, the
options), on synthetic loss curves; and one real test on digits that diverges and stops."""

import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from cnnexp.app.compose import compose_config
from cnnexp.app.extensions import register_hydra_extensions
from cnnexp.errors import UserError
from cnnexp.training.lr_range import (
    RangeTest,
    SmoothedLoss,
    diverging,
    exponential_ramp,
    lowest_loss,
    missing_valley,
    run_range_test,
    validate_lr_find_config,
)


def test_the_ramp_goes_from_start_to_end_by_one_factor_per_step():
    ramp = exponential_ramp(1e-6, 1.0, 7)
    rates = np.array([float(ramp(step)) for step in range(7)])
    assert rates[0] == pytest.approx(1e-6) and rates[-1] == pytest.approx(1.0, rel=1e-5)
    assert np.allclose(rates[1:] / rates[:-1], 10.0, rtol=1e-5)  # one decade a step


def test_smoothing_is_bias_corrected():
    smoother = SmoothedLoss(0.98)
    # A constant loss stays that constant from the first step: no pull towards the average's start at 0.
    assert [smoother.add(2.3) for _ in range(5)] == pytest.approx([2.3] * 5)
    assert SmoothedLoss(0.0).add(7.0) == 7.0  # beta 0: no smoothing
    smoother = SmoothedLoss(0.5)
    values = [smoother.add(loss) for loss in (4.0, 0.0)]
    assert values == pytest.approx([4.0, (0.5 * 0.5 * 4.0) / (1 - 0.25)])  # the weighted mean of 4 and 0


def test_smoothing_damps_noise():
    rng = np.random.default_rng(0)
    noisy = 2.0 + rng.normal(0, 0.5, 300)
    smoother = SmoothedLoss(0.98)
    smoothed = np.array([smoother.add(loss) for loss in noisy])
    assert np.std(smoothed[100:]) < np.std(noisy) / 4


def test_diverging_past_the_factor_times_the_lowest():
    assert not diverging([2.0, 1.0, 3.9], 4.0)
    assert diverging([2.0, 1.0, 4.1], 4.0)
    assert diverging([1.0, 1.6], 1.5)


def synthetic_curve(lrs: np.ndarray, falls_at: float, diverges_at: float) -> np.ndarray:
    """A range test's loss: flat at ln(10), falling fastest (in log lr) at `falls_at`, then climbing
    fast from `diverges_at` on."""
    x = np.log10(lrs)
    fall = 1.8 / (1 + np.exp(-3 * (x - math.log10(falls_at))))
    climb = np.where(x > math.log10(diverges_at), 10 ** (3 * (x - math.log10(diverges_at))) - 1, 0.0)
    return 2.3 - fall + climb


def smoothed(losses, beta=0.98):
    smoother = SmoothedLoss(beta)
    return [smoother.add(loss) for loss in losses]


def test_the_suggestion_is_a_tenth_of_the_rate_at_the_lowest_loss():
    lrs = np.geomspace(1e-7, 10, 200).tolist()
    losses = synthetic_curve(np.array(lrs), falls_at=1e-3, diverges_at=0.1).tolist()
    test = RangeTest(lrs, losses, losses, planned_steps=200, stop_reason=None)
    assert test.no_suggestion is None
    assert test.lrs[test.lowest] == pytest.approx(0.1, rel=0.1)  # where the climb starts
    assert test.suggested_lr == pytest.approx(0.01, rel=0.1)


def test_the_suggestion_from_a_noisy_smoothed_curve_stays_below_the_climb():
    lrs = np.geomspace(1e-7, 10, 300)
    noisy = synthetic_curve(lrs, falls_at=1e-3, diverges_at=0.1) + np.random.default_rng(1).normal(0, 0.3, 300)
    curve = smoothed(noisy)
    stop = next(i for i in range(len(curve)) if diverging(curve[: i + 1], 4.0))
    test = RangeTest(lrs[: stop + 1].tolist(), noisy[: stop + 1].tolist(), curve[: stop + 1], 300, "diverged")
    # The moving average lags behind the climb, so its lowest point comes at a higher rate than the
    # curve's own; a tenth of that is still below the climb, past the steepest fall.
    assert 1e-3 < test.suggested_lr < 0.1


def test_the_first_tenth_of_the_steps_is_not_looked_at():
    curve = [0.5] + [2.3 - 0.01 * step for step in range(99)] + [3.0] * 20  # a lucky first batch
    assert lowest_loss(curve) == 99


@pytest.mark.parametrize("curve, diverged, reason", [
    ([2.3] * 5, True, "it stopped after a few steps: lower lr_find.start_lr"),
    ([2.3 + 0.1 * step for step in range(50)], True, "never fell by 5%: lower lr_find.start_lr"),
    ([2.3] * 50, False, "never fell by 5%"),
    ([2.3 - 0.01 * step for step in range(50)], False, "still falling at lr_find.end_lr: raise it"),
])
def test_no_suggestion_without_a_valley(curve, diverged, reason):
    assert reason in missing_valley(curve, diverged)


def test_a_valley_stopped_by_divergence_is_enough():
    curve = [2.3 - 0.05 * step for step in range(30)] + [0.87]  # up from 0.85, by less than 5%
    assert missing_valley(curve, diverged=True) is None
    assert "still falling" in missing_valley(curve, diverged=False)


def lr_find_config(**options):
    register_hydra_extensions()
    return compose_config("lr_find", [f"lr_find.{key}={value}" for key, value in options.items()])


def test_the_default_options_are_valid():
    validate_lr_find_config(lr_find_config())


@pytest.mark.parametrize("options, message", [
    ({"start_lr": 0}, "invalid lr_find.start_lr=0"),
    ({"start_lr": -1e-3}, "invalid lr_find.start_lr=-0.001"),
    ({"start_lr": "nan"}, "invalid lr_find.start_lr=nan"),
    ({"start_lr": 1e-300}, "must be a number >= 1e-12"),
    ({"end_lr": 1e-8}, "invalid lr_find.end_lr=1e-08: must be a number > lr_find.start_lr (1e-07)"),
    ({"end_lr": "inf"}, "invalid lr_find.end_lr=inf"),
    ({"start_lr": 0.1, "end_lr": 0.1}, "invalid lr_find.end_lr=0.1"),
    ({"steps": 9}, "invalid lr_find.steps=9: must be an integer >= 10"),
    ({"steps": "true"}, "invalid lr_find.steps=True"),
    ({"smoothing": 1}, "invalid lr_find.smoothing=1: must be a number in [0, 1)"),
    ({"divergence": 1}, "invalid lr_find.divergence=1: must be a finite number > 1"),
])
def test_invalid_options_are_refused_in_one_line(options, message):
    with pytest.raises(UserError) as error:
        validate_lr_find_config(lr_find_config(**options))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_lr_find_set_to_a_value_is_refused():
    with pytest.raises(UserError, match="invalid lr_find=3"):
        validate_lr_find_config(OmegaConf.create({"lr_find": 3}))


@pytest.mark.slow  # trains LeNet on digits for a few steps
def test_a_diverging_ramp_stops_early_without_a_suggestion():
    register_hydra_extensions()
    cfg = compose_config("train", ["data=digits", "optim=sgd", "trainer.progress=false"])
    options = lr_find_config(start_lr=100, end_lr=1e6, steps=30).lr_find
    test = run_range_test(cfg, options)
    assert len(test.losses) < 30 and test.stop_reason is not None
    assert test.suggested_lr is None
    assert all(math.isfinite(loss) for loss in test.losses)  # the step that overflowed is not kept
    assert test.lrs == pytest.approx([100 * (1e4 ** (step / 29)) for step in range(len(test.losses))], rel=1e-5)

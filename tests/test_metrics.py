"""Tests for lpsampling.metrics (all CPU, fast)."""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lpsampling.metrics import (
    NLL_EPS,
    bayesian_model_average,
    bma_init,
    bma_probs,
    bma_update,
    error_rate,
    expected_calibration_error,
    log_bayesian_model_average,
    nll,
    pairwise_disagreement,
    paper_ece,
    reliability_diagram_data,
    save_reliability_diagram,
    summarize,
)

# --------------------------------------------------------------------------------------
# A hand-checkable example: 4 examples, 4 classes, 2 bins [0, 0.5] and (0.5, 1].
# All numbers are dyadic, so they are exact in float32.
#
#   row  probs                      label  argmax  conf    correct  bin
#   0    [.75, .25, 0, 0]           0      0       .75     1        1
#   1    [.125, .875, 0, 0]         0      1       .875    0        1
#   2    [.5, .25, .25, 0]          0      0       .5      1        0  (0.5 is in (0, 0.5])
#   3    [.25, .25, .25, .25]       3      0 (tie) .25     0        0
# --------------------------------------------------------------------------------------
HAND_PROBS = np.array(
    [
        [0.75, 0.25, 0.0, 0.0],
        [0.125, 0.875, 0.0, 0.0],
        [0.5, 0.25, 0.25, 0.0],
        [0.25, 0.25, 0.25, 0.25],
    ],
    dtype=np.float32,
)
HAND_LABELS = np.array([0, 0, 0, 3])


def test_error_rate_hand():
    # rows 1 and 3 are wrong -> 2 / 4
    assert float(error_rate(HAND_PROBS, HAND_LABELS)) == pytest.approx(0.5)


def test_nll_hand():
    # p(label) = .75, .125, .5, .25
    expected = -(math.log(0.75) + math.log(0.125) + math.log(0.5) + math.log(0.25)) / 4
    assert float(nll(HAND_PROBS, HAND_LABELS)) == pytest.approx(expected, rel=1e-6)
    # same via log-probabilities
    with np.errstate(divide="ignore"):
        logp = np.log(HAND_PROBS)  # -inf for the zero entries, never picked here
    assert float(nll(logp, HAND_LABELS, from_log=True)) == pytest.approx(expected, rel=1e-6)


def test_nll_clips_zero_probability():
    # row 0 gives probability 0 to its label -> clipped at NLL_EPS; row 1 has p = 1
    probs = np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    labels = np.array([1, 0])
    expected = -(math.log(NLL_EPS) + math.log(1.0)) / 2  # = 27.631.. / 2
    assert float(nll(probs, labels)) == pytest.approx(expected, rel=1e-5)
    logp = np.array([[0.0, -np.inf], [0.0, -np.inf]], dtype=np.float32)
    assert float(nll(logp, labels, from_log=True)) == pytest.approx(expected, rel=1e-5)


def test_ece_hand_two_bins():
    # bin 0 = rows 2, 3: n=2, acc = 1/2, conf = (.5 + .25)/2 = .375   -> |.5 - .375|  = .125
    # bin 1 = rows 0, 1: n=2, acc = 1/2, conf = (.75 + .875)/2 = .8125 -> |.5 - .8125| = .3125
    # ECE = 2/4 * .125 + 2/4 * .3125 = .0625 + .15625 = .21875
    ece = expected_calibration_error(HAND_PROBS, HAND_LABELS, num_bins=2)
    assert float(ece) == pytest.approx(0.21875, abs=1e-7)

    data = reliability_diagram_data(HAND_PROBS, HAND_LABELS, num_bins=2)
    np.testing.assert_array_equal(data.counts, [2, 2])
    np.testing.assert_allclose(data.accuracy, [0.5, 0.5])
    np.testing.assert_allclose(data.confidence, [0.375, 0.8125])
    np.testing.assert_allclose(data.edges, [0.0, 0.5, 1.0])
    recomposed = np.sum(data.counts / 4 * np.abs(data.accuracy - data.confidence))
    assert recomposed == pytest.approx(float(ece))


def test_ece_bin_edges_are_right_closed_and_empty_bins_nan():
    # 4 bins [0,.25], (.25,.5], (.5,.75], (.75,1]; conf .75 -> bin 2, .875 -> 3, .5 -> 1,
    # .25 -> 0: one example each.
    data = reliability_diagram_data(HAND_PROBS, HAND_LABELS, num_bins=4)
    np.testing.assert_array_equal(data.counts, [1, 1, 1, 1])
    np.testing.assert_allclose(data.confidence, [0.25, 0.5, 0.75, 0.875])
    np.testing.assert_allclose(data.accuracy, [0.0, 1.0, 1.0, 0.0])
    # ECE = (|0-.25| + |1-.5| + |1-.75| + |0-.875|) / 4 = 1.875 / 4 = .46875
    assert float(expected_calibration_error(HAND_PROBS, HAND_LABELS, 4)) == pytest.approx(
        0.46875
    )
    # a confidence of exactly 0 falls in the first bin; 8 bins leave some bins empty
    data8 = reliability_diagram_data(HAND_PROBS, HAND_LABELS, num_bins=8)
    assert data8.counts.sum() == 4
    assert np.isnan(data8.accuracy[data8.counts == 0]).all()
    zero = reliability_diagram_data(np.zeros((1, 3), np.float32), np.array([0]), 3)
    np.testing.assert_array_equal(zero.counts, [1, 0, 0])


def test_ece_perfectly_calibrated_is_small():
    # Binary predictions with confidence p_i ~ U(0.5, 1) and correctness ~ Bernoulli(p_i):
    # calibrated by construction. In bin b, acc_b - conf_b is a mean of n_b independent
    # zero-mean terms, so |acc_b - conf_b| fluctuates like sqrt(p_b (1 - p_b) / n_b).
    # Tolerance: 3 x the expected size  sum_b (n_b / N) sqrt(p_b (1 - p_b) / n_b)
    # (~8 non-empty bins of ~2500 examples: 8 * sqrt(2500 * .2) / 20000 ~ 0.008 -> tol ~ 0.025).
    rng = np.random.default_rng(0)
    n = 20_000
    p = rng.uniform(0.5, 1.0, size=n)
    correct = rng.uniform(size=n) < p
    probs = np.stack([p, 1.0 - p], axis=1).astype(np.float32)  # argmax is always class 0
    labels = np.where(correct, 0, 1)

    data = reliability_diagram_data(probs, labels, num_bins=15)
    nz = data.counts > 0
    pb = data.confidence[nz]
    tol = 3.0 * np.sum(data.counts[nz] / n * np.sqrt(pb * (1 - pb) / data.counts[nz]))
    assert tol < 0.03
    ece = float(expected_calibration_error(probs, labels, num_bins=15))
    assert ece < tol

    # Control: accuracy 0.1 below confidence -> ECE ~ 0.1, far above the tolerance.
    labels_over = np.where(rng.uniform(size=n) < p - 0.1, 0, 1)
    ece_over = float(expected_calibration_error(probs, labels_over, num_bins=15))
    assert ece_over == pytest.approx(0.1, abs=0.02)
    assert ece_over > 3 * tol


def test_ece_under_jit():
    f = jax.jit(expected_calibration_error, static_argnames="num_bins")
    assert float(f(HAND_PROBS, HAND_LABELS, num_bins=2)) == pytest.approx(0.21875)
    g = jax.jit(lambda pr, y: (error_rate(pr, y), nll(pr, y)))
    err, loss = g(HAND_PROBS, HAND_LABELS)
    assert float(err) == pytest.approx(0.5)
    assert float(loss) == pytest.approx(float(nll(HAND_PROBS, HAND_LABELS)))


def test_low_precision_inputs_are_promoted():
    probs16 = jnp.asarray(HAND_PROBS, jnp.bfloat16)
    assert float(expected_calibration_error(probs16, HAND_LABELS, 2)) == pytest.approx(
        0.21875
    )
    # the clip value 1e-12 would underflow to 0 in bfloat16/float16 without promotion
    zero = jnp.asarray([[1.0, 0.0]], jnp.float16)
    assert float(nll(zero, np.array([1]))) == pytest.approx(-math.log(NLL_EPS), rel=1e-5)


# --------------------------------------------------------------------------------------
# paper_ece: linspace(0, 1, 10) edges + digitize(right=True) = {0} + 9 bins of width 1/9
# --------------------------------------------------------------------------------------


def _row(conf: float, argmax: int, num_classes: int = 10) -> np.ndarray:
    """Probability row with `conf` on `argmax` and the rest spread evenly."""
    row = np.full(num_classes, (1.0 - conf) / (num_classes - 1))
    row[argmax] = conf
    return row


def test_paper_ece_hand():
    # conf: .95 correct, .58 wrong, .65 correct, .10 (uniform, argmax 0) wrong
    probs = np.stack([_row(0.95, 2), _row(0.58, 1), _row(0.65, 4), np.full(10, 0.1)])
    labels = np.array([2, 0, 4, 5])
    probs = probs.astype(np.float32)
    # 9 bins of width 1/9 (edges .111, .222, ..., .556, .667, ..., .889):
    #   (8/9, 1]   : .95 correct               -> |1 - .95|              = .05
    #   (5/9, 6/9] : .58 wrong and .65 correct -> |(0 - .58) + (1 - .65)| = .23
    #   (0, 1/9]   : .10 wrong                 -> |0 - .10|              = .10
    #   ECE = (.05 + .23 + .10) / 4 = .095
    assert paper_ece(probs, labels) == pytest.approx(0.095, abs=1e-6)
    assert float(expected_calibration_error(probs, labels, 9)) == pytest.approx(0.095, abs=1e-6)
    # With 10 bins of width 1/10, .58 and .65 fall in different bins:
    #   (.05 + .58 + .35 + .10) / 4 = 1.08 / 4 = .27  -- so "num_bins=10" in the paper != 10
    assert float(expected_calibration_error(probs, labels, 10)) == pytest.approx(0.27, abs=1e-6)

    # The only convention difference: a confidence of exactly 0 gets its own bin {0} in
    # the paper (digitize(0, right=True) == 0) but shares our first bin [0, 1/9].
    # Add an all-zero row (argmax 0) with label 0, i.e. correct with conf 0:
    #   paper: .05 + .23 + .10 + |1 - 0| = 1.38 -> / 5 = .276
    #   ours : .05 + .23 + |(0 - .10) + (1 - 0)| = 1.18 -> / 5 = .236
    probs5 = np.concatenate([probs, np.zeros((1, 10), np.float32)])
    labels5 = np.append(labels, 0)
    assert paper_ece(probs5, labels5) == pytest.approx(0.276, abs=1e-6)
    assert float(expected_calibration_error(probs5, labels5, 9)) == pytest.approx(
        0.236, abs=1e-6
    )


def test_paper_ece_matches_nine_bins_on_random_data():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 10)) * 3
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits, jnp.float32)))
    labels = rng.integers(0, 10, size=500)
    # reference: the paper's binning, written independently
    conf = probs.max(1).astype(np.float64)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    idx = np.digitize(conf, np.linspace(0, 1, 10), right=True)
    ref = sum(abs(np.sum(correct[idx == b] - conf[idx == b])) for b in range(10)) / 500
    assert paper_ece(probs, labels) == pytest.approx(ref, abs=1e-12)
    assert float(expected_calibration_error(probs, labels, 9)) == pytest.approx(ref, abs=1e-5)


# --------------------------------------------------------------------------------------
# Bayesian model averaging
# --------------------------------------------------------------------------------------


def test_bma_of_identical_samples_is_softmax():
    rng = np.random.default_rng(2)
    z = rng.normal(size=(7, 5)).astype(np.float32)
    logits = np.broadcast_to(z, (4, 7, 5))
    np.testing.assert_allclose(bayesian_model_average(logits), jax.nn.softmax(z), atol=1e-6)
    np.testing.assert_allclose(
        log_bayesian_model_average(logits), jax.nn.log_softmax(z), atol=1e-5
    )


def test_bma_matches_mean_of_softmax_and_is_stable():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(6, 8, 4)) * 5
    expected = np.mean(np.asarray(jax.nn.softmax(jnp.asarray(logits), axis=-1)), axis=0)
    bma = bayesian_model_average(logits.astype(np.float32))
    np.testing.assert_allclose(bma, expected, atol=1e-6)
    np.testing.assert_allclose(np.sum(bma, axis=-1), 1.0, atol=1e-6)
    # huge logits: no overflow / NaN; samples disagree -> BMA is (.5, .5)
    big = np.array([[[1000.0, 0.0]], [[0.0, 1000.0]]], np.float32)
    np.testing.assert_allclose(bayesian_model_average(big), [[0.5, 0.5]], atol=1e-6)
    np.testing.assert_allclose(log_bayesian_model_average(big), [[math.log(0.5)] * 2],
                               atol=1e-6)


def test_bma_under_jit():
    rng = np.random.default_rng(4)
    logits = jnp.asarray(rng.normal(size=(5, 9, 3)), jnp.float32)
    np.testing.assert_allclose(
        jax.jit(bayesian_model_average)(logits), bayesian_model_average(logits), atol=1e-7
    )
    np.testing.assert_allclose(
        jax.jit(log_bayesian_model_average)(logits), log_bayesian_model_average(logits),
        atol=1e-6,
    )


def test_streaming_bma_equals_batch():
    rng = np.random.default_rng(5)
    logits = jnp.asarray(rng.normal(size=(12, 9, 3)) * 2, jnp.float32)
    batch = bayesian_model_average(logits)

    update = jax.jit(bma_update)
    state = bma_init(9, 3)
    for s in range(logits.shape[0]):
        state = update(state, logits[s])
    assert int(state.count) == 12
    assert state.prob_sum.dtype == jnp.float32
    np.testing.assert_allclose(bma_probs(state), batch, atol=1e-6)

    # chunks of samples, and under jit for the readout
    state = bma_init(9, 3)
    for chunk in (logits[:5], logits[5:6], logits[6:]):
        state = bma_update(state, chunk)
    np.testing.assert_allclose(jax.jit(bma_probs)(state), batch, atol=1e-6)


def test_nll_of_log_bma_matches_probs():
    rng = np.random.default_rng(6)
    logits = rng.normal(size=(4, 20, 5)).astype(np.float32)
    labels = rng.integers(0, 5, size=20)
    a = nll(log_bayesian_model_average(logits), labels, from_log=True)
    b = nll(bayesian_model_average(logits), labels)
    assert float(a) == pytest.approx(float(b), rel=1e-5)


# --------------------------------------------------------------------------------------
# reliability diagram PNG
# --------------------------------------------------------------------------------------


def test_save_reliability_diagram_png(tmp_path):
    import matplotlib
    import matplotlib.image

    backend_before = matplotlib.get_backend()
    rng = np.random.default_rng(7)
    probs_a = np.asarray(jax.nn.softmax(jnp.asarray(rng.normal(size=(200, 10)) * 2)))
    probs_b = np.asarray(jax.nn.softmax(jnp.asarray(rng.normal(size=(200, 10)))))
    labels = rng.integers(0, 10, size=200)
    out = tmp_path / "reliability.png"
    result = save_reliability_diagram(
        out, {"sgld": (probs_a, labels), "sgd": (probs_b, labels)}, num_bins=10, title="t"
    )
    assert os.fspath(result) == os.fspath(out)
    with open(out, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(out)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reliability.png"]  # no temp left
    assert matplotlib.get_backend() == backend_before

    # overwriting an existing file works (os.replace)
    save_reliability_diagram(str(out), {"sgld": (probs_a, labels)})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reliability.png"]


def test_save_reliability_diagram_bad_inputs(tmp_path):
    labels = HAND_LABELS
    with pytest.raises(FileNotFoundError):
        save_reliability_diagram(tmp_path / "missing" / "r.png", {"a": (HAND_PROBS, labels)})
    with pytest.raises(ValueError, match="curves"):
        save_reliability_diagram(tmp_path / "r.png", {})
    with pytest.raises(ValueError, match="num_bins"):
        save_reliability_diagram(tmp_path / "r.png", {"a": (HAND_PROBS, labels)}, num_bins=0)
    with pytest.raises(ValueError, match="labels"):
        save_reliability_diagram(tmp_path / "r.png", {"a": (HAND_PROBS, labels[:3])})
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "15", None])
def test_num_bins_must_be_positive_int(bad):
    with pytest.raises(ValueError, match="num_bins"):
        expected_calibration_error(HAND_PROBS, HAND_LABELS, num_bins=bad)
    with pytest.raises(ValueError, match="num_bins"):
        reliability_diagram_data(HAND_PROBS, HAND_LABELS, num_bins=bad)


def test_num_bins_accepts_numpy_int():
    ece = expected_calibration_error(HAND_PROBS, HAND_LABELS, num_bins=np.int64(2))
    assert float(ece) == pytest.approx(0.21875)


@pytest.mark.parametrize(
    "fn", [error_rate, expected_calibration_error, reliability_diagram_data, paper_ece]
)
def test_probs_shape_errors(fn):
    with pytest.raises(ValueError, match="probs"):
        fn(HAND_PROBS[0], HAND_LABELS[:1])  # 1-D probs
    with pytest.raises(ValueError, match="probs"):
        fn(HAND_PROBS[None], HAND_LABELS)  # 3-D probs
    with pytest.raises(ValueError, match="labels"):
        fn(HAND_PROBS, HAND_LABELS[:3])  # row mismatch
    with pytest.raises(ValueError, match="labels"):
        fn(HAND_PROBS, HAND_LABELS[:, None])  # 2-D labels
    with pytest.raises(ValueError, match="labels"):
        fn(HAND_PROBS, np.array([0, 1, 2, 4]))  # label out of range
    with pytest.raises(ValueError, match="labels"):
        fn(HAND_PROBS, HAND_LABELS.astype(np.float32))  # non-integer labels


def test_nll_shape_errors_name_argument():
    with pytest.raises(ValueError, match="probs_or_logprobs"):
        nll(HAND_PROBS[0], HAND_LABELS[:1])
    with pytest.raises(ValueError, match="labels"):
        nll(HAND_PROBS, HAND_LABELS[:2])


def test_bma_errors():
    with pytest.raises(ValueError, match="logits"):
        bayesian_model_average(np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="logits"):
        log_bayesian_model_average(np.zeros((0, 3, 4), np.float32))
    state = bma_init(3, 4)
    with pytest.raises(ValueError, match="state"):
        bma_probs(state)
    with pytest.raises(ValueError, match="logits"):
        bma_update(state, np.zeros((3, 5), np.float32))
    with pytest.raises(ValueError, match="num_classes"):
        bma_init(3, 0)


# --------------------------------------------------------------------------------------
# summarize
# --------------------------------------------------------------------------------------


def test_summarize_known_values():
    # mean 2.5; deviations -1.5, -.5, .5, 1.5 -> sum of squares 5; s^2 = 5/3;
    # se = sqrt(5/3) / sqrt(4) = 0.6454972...
    mean, se = summarize([1.0, 2.0, 3.0, 4.0])
    assert mean == pytest.approx(2.5)
    assert se == pytest.approx(math.sqrt(5 / 3) / 2)
    assert summarize(np.array([0.25])) == (0.25, 0.0)
    # two values: s = |a - b| / sqrt(2), se = s / sqrt(2) = |a - b| / 2
    assert summarize([1.0, 3.0]) == pytest.approx((2.0, 1.0))
    with pytest.raises(ValueError, match="values"):
        summarize([])
    with pytest.raises(ValueError, match="values"):
        summarize([[1.0, 2.0]])


def test_pairwise_disagreement_hand_and_brute_force():
    # 3 samples, 2 examples: example 0 all agree; example 1 predictions 0, 0, 1 -> 2 of
    # the 3 pairs disagree. D = (0 + 2/3) / 2 = 1/3
    pred = np.array([[1, 0], [1, 0], [1, 1]])
    assert float(pairwise_disagreement(pred, 3)) == pytest.approx(1 / 3)
    rng = np.random.default_rng(0)
    pred = rng.integers(0, 4, (6, 50))
    brute = np.mean([np.mean(pred[i] != pred[j]) for i in range(6) for j in range(i + 1, 6)])
    assert float(pairwise_disagreement(pred, 4)) == pytest.approx(brute, rel=1e-6)
    assert float(pairwise_disagreement(pred[:1], 4)) == 0.0  # one sample: no pair
    with pytest.raises(ValueError, match="predictions"):
        pairwise_disagreement(np.zeros(5, int), 4)

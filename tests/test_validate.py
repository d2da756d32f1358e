"""The shared argument checks (lpsampling.validation) and their use at construction."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lpsampling as lps
from lpsampling import validation as v
from lpsampling.validation import ArgumentTypeError

KEY = jax.random.key(0)


def _grad_estimator(position, minibatch):
    return jax.tree.map(jnp.negative, position)


# ---------------------------------------------------------------- the module itself

@pytest.mark.parametrize("value", [1, 7, np.int32(3), np.int64(5), jnp.asarray(4), 2**62])
def test_positive_int_accepts(value):
    out = v.positive_int("n", value)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value,error,match", [
    (0, ValueError, r"n must be a positive int, got 0"),
    (-3, ValueError, r"n must be a positive int, got -3"),
    (2**62 + 1, ValueError, r"n must be a positive int no larger than 2\*\*62"),
    (10**30, ValueError, r"no larger than"),
    (True, TypeError, r"n must be a positive int, got True \(bool\)"),
    (2.0, TypeError, r"n must be a positive int, got 2.0 \(float\)"),
    ("10", TypeError, r"n must be a positive int, got '10' \(str\)"),
    (None, TypeError, r"n must be a positive int, got None"),
])
def test_positive_int_refuses(value, error, match):
    with pytest.raises(error, match=match):
        v.positive_int("n", value)


def test_positive_int_options():
    assert v.positive_int("n", None, allow_none=True) is None
    assert v.positive_int("seed", 0, minimum=0) == 0
    with pytest.raises(ValueError, match=r"num_chains must be an int >= 2, got 1"):
        v.positive_int("num_chains", 1, minimum=2)
    with pytest.raises(TypeError, match="or None"):
        v.positive_int("n", "x", allow_none=True)


def test_type_errors_are_also_value_errors():
    # Code that caught ValueError for a wrong type before keeps working.
    with pytest.raises(ValueError):
        v.positive_int("n", "3")
    assert issubclass(ArgumentTypeError, TypeError)
    assert issubclass(ArgumentTypeError, ValueError)


@pytest.mark.parametrize("value", [0.1, 3, np.float32(0.5), np.int64(2), jnp.asarray(0.25),
                                   jnp.float32(2.0), 1e30])
def test_finite_float_accepts(value):
    out = v.finite_float("lr", value, positive=True)
    assert out == pytest.approx(float(value)) and type(out) is float


@pytest.mark.parametrize("value,error,match", [
    (math.nan, ValueError, "lr must not be NaN"),
    (math.inf, ValueError, "lr must be finite, got inf"),
    (-math.inf, ValueError, "lr must be finite"),
    (np.float32("inf"), ValueError, "lr must be finite"),
    (jnp.asarray(jnp.nan), ValueError, "lr must not be NaN"),
    (10**400, ValueError, "lr must be finite"),
    (0.0, ValueError, "lr must be > 0, got 0.0"),
    (-1.0, ValueError, "lr must be > 0"),
    (True, TypeError, r"lr must be a real number, got True \(bool\)"),
    ("1", TypeError, r"lr must be a real number, got '1' \(str\)"),
    (1 + 2j, TypeError, "lr must be a real number"),
    (jnp.ones(3), TypeError, r"lr must be a number, got an array of shape \(3,\)"),
    (jnp.asarray(1 + 1j), TypeError, "real number.*complex"),
    (None, TypeError, "lr must be a real number, got None"),
])
def test_finite_float_refuses(value, error, match):
    with pytest.raises(error, match=match):
        v.finite_float("lr", value, positive=True)


def test_finite_float_options_and_deferred_values():
    assert v.finite_float("wd", 0) == 0.0
    with pytest.raises(ValueError, match="wd must be >= 0"):
        v.finite_float("wd", -0.1)
    assert v.finite_float("shift", -2.0, nonnegative=False) == -2.0
    with pytest.raises(ValueError, match="t must be nonzero"):
        v.finite_float("t", 0.0, allow_zero=False)
    # Schedules and traced values are the caller's to check.
    assert v.finite_float("lr", lambda count: 0.1) is None
    seen = []
    jax.jit(lambda x: seen.append(v.finite_float("lr", x)) or x)(1.0)
    assert seen == [None]


def test_unit_interval():
    assert v.unit_interval("r", 0) == 0.0
    assert v.unit_interval("r", np.float32(0.5)) == 0.5
    with pytest.raises(ValueError, match=r"r must be in \[0, 1\), got 1.0"):
        v.unit_interval("r", 1.0)
    assert v.unit_interval("r", 1.0, open_right=False) == 1.0
    with pytest.raises(ValueError, match=r"r must be in \(0, 1\), got 0"):
        v.unit_interval("r", 0, open_left=True)
    with pytest.raises(ValueError, match="r must not be NaN"):
        v.unit_interval("r", math.nan)
    with pytest.raises(ValueError, match="r must be in"):
        v.unit_interval("r", -0.1)
    with pytest.raises(TypeError, match="r must be a real number"):
        v.unit_interval("r", "0.5")
    with pytest.raises(TypeError, match=r"r must be a number in \[0, 1\)"):
        v.unit_interval("r", lambda c: 0.5)


def test_prng_key():
    typed = jax.random.key(1)
    raw = jax.random.PRNGKey(1)
    assert v.prng_key("key", typed) is typed
    assert v.prng_key("key", raw) is raw
    assert v.prng_key("key", jax.random.split(typed, 3)) is not None
    jax.jit(lambda k: jax.random.normal(v.prng_key("key", k)))(typed)
    with pytest.raises(ValueError, match=r"key is required.*jax.random.key\(seed\)"):
        v.prng_key("key", None)
    for bad, what in ((0, "int"), ("abc", "str"), (np.zeros(2, np.uint32), "ndarray")):
        with pytest.raises(TypeError, match=f"key must be a JAX PRNG key array.*got {what}"):
            v.prng_key("key", bad)
    with pytest.raises(TypeError, match="key must be a JAX PRNG key.*dtype float32"):
        v.prng_key("key", jnp.zeros(2))
    with pytest.raises(TypeError, match="dtype int32"):
        v.prng_key("key", jnp.asarray(3))


def test_float_pytree():
    tree = {"w": jnp.ones(2), "b": [np.zeros(3, np.float64), 1.5]}
    assert v.float_pytree("params", tree) is tree
    with pytest.raises(TypeError, match=r"params\['w'\] must be a real floating-point "
                                        r"array, got dtype int32"):
        v.float_pytree("params", {"w": jnp.ones(2, jnp.int32)})
    with pytest.raises(TypeError, match=r"grads\['b'\]\[1\].*complex64 \(complex\)"):
        v.float_pytree("grads", {"b": [jnp.ones(1), jnp.ones(1, jnp.complex64)]})
    with pytest.raises(TypeError, match=r"params\[0\].*bool"):
        v.float_pytree("params", [np.ones(2, bool)])
    with pytest.raises(TypeError, match=r"params\[0\]"):
        v.float_pytree("params", [3])


def test_normalize_name():
    assert v.normalize_name(" Fashion-MNIST ", "dataset", sep="_") == "fashion_mnist"
    assert v.normalize_name("SGLD_LP_F", "method") == "sgld-lp-f"
    with pytest.raises(ValueError, match="dataset must be a string, got 3"):
        v.normalize_name(3, "dataset")


# ------------------------------------------------ every face refuses at construction

BAD_CONSTANTS = [
    ("learning_rate", math.inf), ("learning_rate", "0.1"), ("learning_rate", -math.inf),
    ("temperature", math.inf), ("temperature", "1"), ("temperature", math.nan),
    ("weight_decay", math.inf), ("weight_decay", "0"),
    ("num_data", math.inf), ("num_data", "10"), ("num_data", 10**30), ("num_data", 0),
    ("num_data", True),
]


@pytest.mark.parametrize("field,value", BAD_CONSTANTS)
def test_optax_sgld_refuses_at_construction(field, value):
    kw = {"learning_rate": 1e-3, "num_data": 10, "temperature": 1.0, "weight_decay": 0.0}
    kw[field] = value
    lr = kw.pop("learning_rate")
    with pytest.raises((TypeError, ValueError), match=field):
        lps.sgld(lr, key=KEY, **kw)


@pytest.mark.parametrize("field,value", [f for f in BAD_CONSTANTS
                                         if f[0] in ("learning_rate", "weight_decay")])
def test_optax_sgd_refuses_at_construction(field, value):
    kw = {"learning_rate": 1e-3, "weight_decay": 0.0}
    kw[field] = value
    with pytest.raises((TypeError, ValueError), match=field):
        lps.sgd(kw.pop("learning_rate"), key=KEY, **kw)


@pytest.mark.parametrize("field,value", [
    ("init_lr", math.inf), ("init_lr", "0.1"), ("temperature", math.inf),
    ("temperature", "1"), ("weight_decay", math.inf), ("num_data", "10"),
    ("num_data", 10**30), ("num_cycles", 2**70), ("num_cycles", "2"),
    ("total_steps", 10.0), ("exploration_ratio", math.nan), ("exploration_ratio", "0.5"),
])
def test_optax_cyclical_sgld_refuses_at_construction(field, value):
    kw = {"init_lr": 0.1, "num_data": 10, "num_cycles": 2, "total_steps": 10,
          "temperature": 1.0, "weight_decay": 0.0}
    kw[field] = value
    with pytest.raises((TypeError, ValueError), match=field):
        lps.cyclical_sgld(kw.pop("init_lr"), key=KEY, **kw)


def test_optax_huge_num_data_int_is_exact_enough():
    # An int above 2**31 used to overflow at the first update; now it is a float N.
    opt = lps.sgld(1e-3, num_data=2**40, key=KEY)
    params = {"w": jnp.ones(3)}
    updates, _ = opt.update({"w": jnp.zeros(3)}, opt.init(params), params)
    assert bool(jnp.all(jnp.isfinite(updates["w"])))


@pytest.mark.parametrize("key", [0, "abc", jnp.zeros(2)])
def test_optax_refuses_bad_keys(key):
    with pytest.raises(TypeError, match="key must be a JAX PRNG key"):
        lps.sgld(1e-3, num_data=10, key=key)


def test_optax_refuses_non_float_params_and_complex_grads():
    opt = lps.sgld(1e-3, num_data=10, key=KEY)
    with pytest.raises(TypeError, match=r"params\['w'\].*int32"):
        opt.init({"w": jnp.ones(3, jnp.int32)})
    params = {"w": jnp.ones(3)}
    with pytest.raises(TypeError, match=r"grads\['w'\].*complex"):
        opt.update({"w": jnp.ones(3, jnp.complex64)}, opt.init(params), params)


def test_optax_precision_object_or_shortcuts():
    fx = lps.FixedPoint(8, 6)
    p = lps.Precision(fx, fx, "low")
    a = lps.sgld(1e-3, num_data=10, precision=p, key=KEY)
    b = lps.sgld(1e-3, num_data=10, weight_format=fx, grad_format=fx, accumulator="low",
                 key=KEY)
    params = {"w": jnp.full(4, 0.25)}
    grads = {"w": jnp.full(4, 0.5)}
    ua, _ = a.update(grads, a.init(params), params)
    ub, _ = b.update(grads, b.init(params), params)
    np.testing.assert_array_equal(ua["w"], ub["w"])
    with pytest.raises(ValueError, match=r"sgd\(\).*not both"):
        lps.sgd(1e-3, precision=p, accumulator="low", key=KEY)
    with pytest.raises(TypeError, match="unexpected keyword argument 'weight_fromat'"):
        lps.cyclical_sgld(0.1, num_data=10, num_cycles=1, total_steps=2, key=KEY,
                          weight_fromat=fx)


@pytest.mark.parametrize("field,value", [
    ("init_step_size", math.inf), ("init_step_size", "0.1"), ("init_step_size", math.nan),
    ("num_cycles", "2"), ("num_cycles", 2**70), ("total_steps", 10.5),
    ("exploration_ratio", math.inf), ("exploration_ratio", "0"),
])
def test_blackjax_cyclical_refuses_at_construction(field, value):
    kw = {"init_step_size": 0.1, "num_cycles": 2, "total_steps": 10}
    kw[field] = value
    with pytest.raises((TypeError, ValueError), match=field):
        lps.blackjax.cyclical_sgld(_grad_estimator, **kw)
    with pytest.raises((TypeError, ValueError), match=field):
        lps.blackjax.cyclical_sgld.build_kernel(**kw)


@pytest.mark.parametrize("field,value", [
    ("step_size", math.inf), ("step_size", "0.1"), ("step_size", -1.0),
    ("step_size", math.nan), ("temperature", math.inf), ("temperature", "1"),
])
def test_blackjax_sgld_refuses_concrete_bad_step_arguments(field, value):
    alg = lps.blackjax.sgld(_grad_estimator)
    state = alg.init(jnp.ones(2))
    kw = {"step_size": 1e-3, "temperature": 1.0}
    kw[field] = value
    with pytest.raises((TypeError, ValueError), match=field):
        alg.step(KEY, state, None, **kw)


def test_blackjax_refuses_non_float_positions_and_bad_keys():
    with pytest.raises(TypeError, match="position.*int32"):
        lps.blackjax.sgld(_grad_estimator).init(jnp.ones(2, jnp.int32))
    with pytest.raises(TypeError, match="position.*int32"):
        lps.blackjax.cyclical_sgld(_grad_estimator, init_step_size=0.1, num_cycles=1,
                                   total_steps=2).init(jnp.ones(2, jnp.int32))
    with pytest.raises(TypeError, match="rng_key must be a JAX PRNG key"):
        lps.blackjax.weights(jnp.ones(2), rng_key=0)


# ---------------------------------------------------------------- issue 10, list 7


def test_finite_pytree():
    tree = {"w": jnp.ones(2), "b": [np.zeros(3, np.float64), 1.5]}
    assert v.finite_pytree("params", tree) is tree
    with pytest.raises(ValueError, match=r"params\['b'\]\[1\] holds 1 non-finite"):
        v.finite_pytree("params", {"w": jnp.ones(2), "b": [jnp.ones(1), jnp.array([0., np.nan])]})
    with pytest.raises(ValueError, match=r"params\['w'\] holds 2 non-finite"):
        v.finite_pytree("params", {"w": np.array([np.inf, -np.inf, 0.0])})
    # traced leaves are not checked
    jax.jit(lambda t: v.finite_pytree("params", t))({"w": jnp.array([np.nan])})


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("make", [
    lambda: lps.sgld(1e-3, num_data=10, key=KEY),
    lambda: lps.sgd(1e-3, key=KEY),
    lambda: lps.cyclical_sgld(0.1, num_data=10, num_cycles=1, total_steps=4, key=KEY),
    lambda: lps.sgld(1e-3, num_data=10, key=KEY, accumulator="low",
                     weight_format=lps.FixedPoint(8, 6)),
    lambda: lps.sghmc(1e-3, num_data=10, key=KEY),
    lambda: lps.sgd(1e-3, 0.9, key=KEY),
])
def test_optax_init_refuses_non_finite_params(make, value):
    opt = make()
    params = {"layer": {"w": jnp.ones(3), "b": jnp.array([0.0, value])}}
    with pytest.raises(ValueError, match=r"params\['layer'\]\['b'\].*non-finite"):
        opt.init(params)
    # under jit nothing is checked (and nothing fails)
    jax.jit(opt.init)(params)
    opt.init({"layer": {"w": jnp.ones(3), "b": jnp.zeros(2)}})


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_blackjax_init_refuses_non_finite_positions(value):
    position = {"w": jnp.array([1.0, value])}
    sgld = lps.blackjax.sgld(_grad_estimator)
    cyc = lps.blackjax.cyclical_sgld(_grad_estimator, init_step_size=0.1, num_cycles=1,
                                     total_steps=2)
    for init in (sgld.init, cyc.init, lps.blackjax.sgld.init,
                 lps.blackjax.cyclical_sgld.init):
        with pytest.raises(ValueError, match=r"position\['w'\].*non-finite"):
            init(position)
    jax.jit(sgld.init)(position)
    jax.jit(cyc.init)(position)
    with pytest.raises(ValueError, match=r"position.*non-finite"):
        sgld.init(float(value))


@pytest.mark.parametrize("field,value", [
    ("step_size", 0.0), ("step_size", -np.inf), ("temperature", -1.0),
    ("temperature", math.nan), ("temperature", jnp.asarray(np.nan)),
])
def test_blackjax_step_refuses_concrete_nan_negative_inf(field, value):
    alg = lps.blackjax.sgld(_grad_estimator)
    kw = {"step_size": 1e-3, "temperature": 1.0}
    kw[field] = value
    with pytest.raises(ValueError, match=field):
        alg.step(KEY, alg.init(jnp.ones(2)), None, **kw)
    if field == "temperature":
        cyc = lps.blackjax.cyclical_sgld(_grad_estimator, init_step_size=0.1, num_cycles=1,
                                         total_steps=4)
        with pytest.raises(ValueError, match="temperature"):
            cyc.step(KEY, cyc.init(jnp.ones(2)), None, temperature=value)


def test_blackjax_traced_bad_step_size_skips_the_step():
    alg = lps.blackjax.sgld(_grad_estimator)
    step = jax.jit(alg.step)
    position = alg.init(jnp.ones(2))
    for step_size, temperature in [(np.nan, 1.0), (-1e-3, 1.0), (np.inf, 1.0),
                                   (1e-3, np.nan), (1e-3, -1.0)]:
        new = step(KEY, position, None, jnp.float32(step_size), jnp.float32(temperature))
        np.testing.assert_array_equal(np.asarray(new), np.ones(2))
    new = step(KEY, position, None, jnp.float32(1e-3), jnp.float32(1.0))
    assert not np.array_equal(np.asarray(new), np.ones(2))


def test_blackjax_cyclical_counts_skipped_steps():
    def grads(position, minibatch):
        return jax.tree.map(lambda p: jnp.where(minibatch, jnp.nan, -p), position)

    alg = lps.blackjax.cyclical_sgld(grads, init_step_size=0.1, num_cycles=1,
                                     total_steps=6, exploration_ratio=0.5)
    state = alg.init({"w": jnp.ones(3)})
    assert int(state.nonfinite_count) == 0
    step = jax.jit(alg.step)
    for bad in [False, True, True, False, True, False]:
        before = state.position["w"]
        state = step(KEY, state, jnp.asarray(bad))
        if bad:
            np.testing.assert_array_equal(np.asarray(state.position["w"]), np.asarray(before))
    assert int(state.count) == 6 and int(state.nonfinite_count) == 3
    assert state.nonfinite_count.dtype == jnp.int32
    # traced NaN temperature on a sampling step (count 3 of a cycle of 6, ratio 0.5) is
    # skipped and counted too; on an exploration step the temperature is not used
    state = state._replace(count=jnp.asarray(3, jnp.int32))
    new = step(KEY, state, jnp.asarray(False), jnp.float32(np.nan))
    assert bool(new.sampling) and int(new.nonfinite_count) == 4
    np.testing.assert_array_equal(np.asarray(new.position["w"]),
                                  np.asarray(state.position["w"]))

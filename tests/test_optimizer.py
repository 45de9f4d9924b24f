"""cnncore.optimizer: the textbook's update rules, in place, with lazy state and checked arguments."""
import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

import cnncore
from cnncore import kernels as K
from cnncore.optimizer import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

STEPS = 3


def _problem(rng, dtype=np.float64):
    params = {"W": rng.standard_normal((3, 2)).astype(dtype), "b": rng.standard_normal(2).astype(dtype)}
    grads = [{k: rng.standard_normal(v.shape).astype(dtype) for k, v in params.items()}
             for _ in range(STEPS)]
    return params, grads


def _expected(name, p, gs, lr=0.01):
    """The update rules of API.md section 7, written out for one array."""
    p = p.copy()
    s1, s2 = np.zeros_like(p), np.zeros_like(p)
    for i, g in enumerate(gs, 1):
        if name == "SGD":
            p = p - lr * g
        elif name == "Momentum":
            s1 = 0.9 * s1 - lr * g
            p = p + s1
        elif name == "Nesterov":  # the Japanese edition: old v in the parameter step
            p = p + 0.81 * s1 - 1.9 * lr * g
            s1 = 0.9 * s1 - lr * g
        elif name == "Nesterov-legacy":  # the Korean edition: new v in the parameter step
            s1 = 0.9 * s1 - lr * g
            p = p + 0.81 * s1 - 1.9 * lr * g
        elif name == "AdaGrad":
            s1 = s1 + g * g
            p = p - lr * g / (np.sqrt(s1) + 1e-7)
        elif name == "RMSprop":
            s1 = 0.99 * s1 + 0.01 * g * g
            p = p - lr * g / (np.sqrt(s1) + 1e-7)
        elif name == "Adam":
            lr_t = lr * math.sqrt(1 - 0.999 ** i) / (1 - 0.9 ** i)
            s1 = s1 + 0.1 * (g - s1)
            s2 = s2 + 0.001 * (g * g - s2)
            p = p - lr_t * s1 / (np.sqrt(s2) + 1e-7)
    return p


FACTORIES = {"SGD": SGD, "Momentum": Momentum, "Nesterov": Nesterov,
             "Nesterov-legacy": lambda: Nesterov(legacy=True), "AdaGrad": AdaGrad, "RMSprop": RMSprop,
             "Adam": lambda: Adam(lr=0.01)}
NAMES = list(FACTORIES)


def _make(name):
    return FACTORIES[name]()


@pytest.mark.parametrize("name", NAMES)
def test_updates_follow_the_textbook_formulas_in_place(name, rng):
    params, grads = _problem(rng)
    before = {k: v.copy() for k, v in params.items()}
    objects = {k: v for k, v in params.items()}
    opt = _make(name)
    for g in grads:
        opt.update(params, g)
    for k in params:
        assert params[k] is objects[k]  # updated in place: layers holding the array see it
        assert_allclose(params[k], _expected(name, before[k], [g[k] for g in grads]), rtol=1e-12)


def test_nesterov_orders_differ(rng):
    params, grads = _problem(rng)
    jp, kr = {k: v.copy() for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
    a, b = Nesterov(), Nesterov(legacy=True)
    for g in grads:
        a.update(jp, g)
        b.update(kr, g)
    assert not np.allclose(jp["W"], kr["W"])


@pytest.mark.parametrize("cls, state", [(Momentum, "v"), (Nesterov, "v"), (AdaGrad, "h"),
                                        (RMSprop, "h"), (Adam, "m")])
def test_state_is_created_lazily_keyed_like_params(cls, state, rng):
    params, grads = _problem(rng)
    opt = cls()
    assert getattr(opt, state) is None
    opt.update(params, grads[0])
    assert list(getattr(opt, state)) == list(params)
    assert all(getattr(opt, state)[k].shape == params[k].shape for k in params)
    if cls is Adam:
        assert opt.iter == 1


@pytest.mark.parametrize("name", NAMES)
def test_python_floats_as_params(name, rng):
    # ch06/optimizer_compare_naive.py optimises a dict of two floats
    params, grads = {"x": -7.0, "y": 2.0}, [{"x": 0.3 * i, "y": -0.1 * i} for i in range(1, 4)]
    arrays = {k: np.array([v]) for k, v in params.items()}
    a, b = _make(name), _make(name)
    for g in grads:
        a.update(params, g)
        b.update(arrays, {k: np.array([v]) for k, v in g.items()})
    for k in params:
        assert float(params[k]) == pytest.approx(arrays[k][0], rel=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("grad_dtype", [np.float32, np.float64])
def test_float32_params_stay_float32(name, grad_dtype, rng):
    params, grads = _problem(rng, np.float32)
    opt = _make(name)
    for g in grads:
        opt.update(params, {k: v.astype(grad_dtype) for k, v in g.items()})
    assert all(v.dtype == np.float32 for v in params.values())


@pytest.mark.parametrize("cls, kwargs, arg", [
    (SGD, {"lr": 0}, "lr"), (SGD, {"lr": -0.1}, "lr"), (SGD, {"lr": float("nan")}, "lr"),
    (Momentum, {"momentum": 1.0}, "momentum"), (Momentum, {"lr": -1}, "lr"),
    (Nesterov, {"momentum": -0.1}, "momentum"), (AdaGrad, {"lr": 0.0}, "lr"),
    (RMSprop, {"decay_rate": 1.5}, "decay_rate"), (Adam, {"beta1": 1.0}, "beta1"),
    (Adam, {"beta2": -0.5}, "beta2"), (Adam, {"lr": float("inf")}, "lr"),
])
def test_bad_hyperparameters_raise_value_error_naming_them(cls, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        cls(**kwargs)


@pytest.mark.parametrize("value", ["0.1", None, True])
def test_non_numbers_raise_type_error(value):
    with pytest.raises(TypeError, match="lr"):
        SGD(lr=value)


# ------------------------------------------------------------------------- Adam's compiled pass

def _adam_twins(params):
    """Two Adams with the same settings: the compiled pass (default) and the textbook's statements."""
    compiled, textbook = Adam(lr=0.01), Adam(lr=0.01)
    textbook.compiled = False
    return compiled, textbook, {k: np.array(v, copy=True) for k, v in params.items()}


def _assert_same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads", [1, 2])
def test_adam_compiled_pass_gives_the_textbook_statements_bits(dtype, threads, rng):
    # Shapes: empty, one element, odd, and more elements than one parallel chunk (16384).
    shapes = {"empty": (0, 3), "one": (1,), "odd": (7, 3, 5), "large": (4320, 10), "bias": (30,)}
    params = {k: rng.standard_normal(s).astype(dtype) for k, s in shapes.items()}
    compiled, textbook, twin = _adam_twins(params)
    objects = dict(params)
    previous = cnncore.get_num_threads()
    cnncore.set_num_threads(threads)
    compiled_steps = 0
    try:
        for _ in range(4):
            grads = {k: (rng.standard_normal(s) * 10).astype(dtype) for k, s in shapes.items()}
            compiled.update(params, grads)
            textbook.update(twin, grads)
            # the arrays the compiled pass takes (Adam runs it whenever adam_fits)
            compiled_steps += sum(K.adam_fits(params[k], grads[k], compiled.m[k], compiled.v[k])
                                  for k in shapes)
    finally:
        cnncore.set_num_threads(previous)
    assert compiled_steps == 4 * len(shapes)
    for k in shapes:
        assert params[k] is objects[k] and params[k].dtype == dtype
        _assert_same_bits(params[k], twin[k])
        _assert_same_bits(compiled.m[k], textbook.m[k])
        _assert_same_bits(compiled.v[k], textbook.v[k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_compiled_pass_spreads_non_finite_gradients_like_numpy(dtype, rng):
    params = {"W": rng.standard_normal((5, 4)).astype(dtype)}
    compiled, textbook, twin = _adam_twins(params)
    g = rng.standard_normal((5, 4)).astype(dtype)
    g[0, 0], g[1, 1], g[2, 2] = np.nan, np.inf, -np.inf
    g[3] = np.finfo(dtype).max          # g*g overflows to inf
    compiled.update(params, {"W": g})
    textbook.update(twin, {"W": g})
    _assert_same_bits(params["W"], twin["W"])
    _assert_same_bits(compiled.v["W"], textbook.v["W"])


def _strided(rng):
    return rng.standard_normal((6, 4)).T      # not C-contiguous


@pytest.mark.parametrize("case", ["python float", "strided param", "float64 grads", "float16",
                                  "integer grads", "grads are the params"])
def test_adam_takes_the_textbook_statements_where_the_pass_does_not_fit(case, rng):
    p32 = rng.standard_normal((4, 6)).astype(np.float32)
    params, grads = {
        "python float": ({"a": 0.5}, {"a": 0.25}),
        "strided param": ({"W": _strided(rng)}, {"W": rng.standard_normal((4, 6))}),
        "float64 grads": ({"W": p32}, {"W": rng.standard_normal((4, 6))}),
        "float16": ({"W": p32.astype(np.float16)}, {"W": p32.astype(np.float16)}),
        "integer grads": ({"W": p32}, {"W": np.arange(24).reshape(4, 6)}),
        "grads are the params": ({"W": p32}, None),
    }[case]
    compiled, textbook, twin = _adam_twins(params)
    grads = grads if grads is not None else params
    compiled.update(params, grads)
    textbook.update(twin, grads if grads is not params else twin)
    for k in params:
        # the compiled pass runs only where adam_fits: here it must not
        assert not K.adam_fits(params[k], grads[k], compiled.m[k], compiled.v[k])
        _assert_same_bits(params[k], twin[k])


@pytest.mark.parametrize("bad", ["shape", "dtype", "strided", "read-only", "shared", "int"])
def test_adam_update_rejects_what_it_cannot_take(bad, rng):
    p, g, m, v = (rng.standard_normal((3, 4)).astype(np.float32) for _ in range(4))
    if bad == "shape":
        g = g[:2]
    elif bad == "dtype":
        g = g.astype(np.float64)
    elif bad == "strided":
        m = np.zeros((4, 3), np.float32).T
    elif bad == "read-only":
        v.flags.writeable = False
    elif bad == "shared":
        m = p
    else:
        p, g, m, v = (a.astype(np.int32) for a in (p, g, m, v))
    before = p.copy()
    with pytest.raises(ValueError, match="adam_update"):
        K.adam_update(p, g, m, v, 0.01, 0.9, 0.999)
    np.testing.assert_array_equal(p, before)


@pytest.mark.parametrize("name", NAMES)
def test_a_read_only_parameter_is_refused_before_anything_changes(name, rng):
    """Issue 26: the others were updated, then the read-only one raised."""
    params = {"W1": rng.standard_normal((3, 2)), "W2": rng.standard_normal(4)}
    params["W2"].flags.writeable = False
    grads = {key: rng.standard_normal(np.shape(val)) for key, val in params.items()}
    before = {key: val.copy() for key, val in params.items()}
    optimizer = _make(name)
    with pytest.raises(ValueError, match=r"params\['W2'\] is read-only"):
        optimizer.update(params, grads)
    assert all(np.array_equal(params[key], before[key]) for key in params)

"""`cnnexp summary`: rows against real forward passes, hand-computed LeNet and receptive fields,
the output-size check, the formats, and the command as a user runs it."""

import csv
import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers.models import marked_slow

from cnnexp.inspection import render, summarize_model, summarize_module
from cnnexp.inspection.model_summary import check_output_size
from cnnexp.models import count_params, create_model, list_models, recording
from cnnexp.models.layers import Pool2d
from cnnexp.models.recording import LayerRecord

SMALL = (8, 8, 1)
CLASSES = 7
# Tracing and compiling these takes seconds a test: their rows are slow.
HEAVY = ("alexnet", "densenet", "inception", "inception_resnet")


def _filled(abstract: nnx.Module) -> nnx.Module:
    """`abstract` with real arrays: small random weights, ones for batch statistics. Drawn with
    numpy rather than by the models' initializers, which run eagerly compile one program per
    parameter shape (most of a minute for DenseNet on two shared CPU cores)."""
    rng = np.random.default_rng(0)
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)

    def other(leaf):
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            return jax.random.key(0)
        return jnp.asarray(np.ones(leaf.shape, leaf.dtype))

    params = jax.tree.map(lambda leaf: jnp.asarray(0.05 * rng.standard_normal(leaf.shape, dtype=np.float32)), params)
    return nnx.merge(graphdef, params, jax.tree.map(other, rest))


@pytest.mark.parametrize("name", marked_slow(list_models(), HEAVY))
def test_rows_match_the_real_forward_pass(name):
    model = _filled(nnx.eval_shape(lambda: create_model(name, {}, input_shape=SMALL, num_classes=CLASSES,
                                                         rngs=nnx.Rngs(0))))
    model.eval()
    paths = {}

    @nnx.jit
    def forward(model, image):  # records point at the modules of jit's copy: name them there
        paths.update({id(m): ".".join(map(str, p)) for p, m in nnx.iter_modules(model)})
        return model(image)

    with recording.recording() as records:
        logits = forward(model, jax.random.normal(jax.random.key(0), (1, *SMALL)))

    summary = summarize_model(name, {}, SMALL, CLASSES)  # built and traced abstractly, as the command does
    assert [row.output_shape for row in summary.rows] == [r.output_shape[1:] for r in records]
    assert [row.name.split(" (call ")[0] for row in summary.rows] == [paths.get(id(r.module)) for r in records]
    assert summary.rows[-1].output_shape == summary.output_shape == logits.shape[1:] == (CLASSES,)
    assert all(row.receptive_field is not None for row in summary.rows)
    assert all(row.check is None or row.check.status != "MISMATCH" for row in summary.rows)


@pytest.mark.parametrize("name", marked_slow(list_models(), HEAVY))
def test_total_params_is_count_params_and_every_parameter_is_in_a_row(name):
    summary = summarize_model(name, {}, (28, 28, 1), CLASSES)
    model = nnx.eval_shape(lambda: create_model(name, {}, input_shape=(28, 28, 1), num_classes=CLASSES,
                                                 rngs=nnx.Rngs(0)))
    assert summary.total_params == count_params(model) == summary.params_in_rows
    assert summary.params_outside_rows == {}


@pytest.mark.parametrize("name", marked_slow(list_models(), HEAVY))
def test_im2col_and_reference_pooling_give_the_same_table(name):
    # The textbook implementations trace to slices, concatenations and matrix products; the
    # receptive fields must still come out as for XLA's convolution and pooling.
    library = summarize_model(name, {}, (28, 28, 1), CLASSES)
    textbook = summarize_model(name, {"conv_impl": "im2col", "pool_impl": "reference"}, (28, 28, 1), CLASSES)
    assert textbook.rows == library.rows


def test_lenet_rows_by_hand():
    summary = summarize_model("lenet", {}, (28, 28, 1), 10)
    rows = [(r.name, r.kind, r.kernel, r.stride, r.output_shape, r.params, r.macs, r.receptive_field, r.dense_params)
            for r in summary.rows]
    # 28x28 is padded to the paper's 32x32 first, so C1 sees a 32x32x1 input.
    assert rows == [
        ("conv1", "conv", (5, 5), 1, (28, 28, 6), 5 * 5 * 6 + 6, 28 * 28 * 6 * 25, (5, 5), 32 * 32 * 4704 + 4704),
        ("pool1", "pool", (2, 2), 2, (14, 14, 6), 0, 0, (6, 6), None),
        ("conv2", "conv", (5, 5), 1, (10, 10, 16), 5 * 5 * 6 * 16 + 16, 10 * 10 * 16 * 150, (14, 14),
         14 * 14 * 6 * 1600 + 1600),
        ("pool2", "pool", (2, 2), 2, (5, 5, 16), 0, 0, (16, 16), None),
        ("fc1", "dense", None, None, (120,), 400 * 120 + 120, 48_000, "global", 48_120),
        ("fc2", "dense", None, None, (84,), 120 * 84 + 84, 10_080, "global", 10_164),
        ("head", "dense", None, None, (10,), 84 * 10 + 10, 840, "global", 850),
    ]
    assert summary.total_params == 61_706 == summary.params_in_rows
    assert summary.total_macs == 117_600 + 240_000 + 48_000 + 10_080 + 840
    assert [r.check.status for r in summary.rows if r.check] == ["ok"] * 4
    assert summary.notes() == []


def _record(size: int, kernel: int, stride: int, pads: tuple[int, int], out: int) -> LayerRecord:
    return LayerRecord(module=None, kind="conv", input_shape=(1, size, size, 3), output_shape=(1, out, out, 8),
                       params=0, macs=0, info={"kernel": (kernel, kernel), "stride": stride, "padding": (pads, pads)})


def test_output_size_check():
    assert check_output_size(_record(7, 3, 2, (0, 0), 3)).status == "ok"  # (7 - 3) / 2 + 1
    wrong = check_output_size(_record(7, 3, 2, (0, 0), 4))
    assert (wrong.status, wrong.expected) == ("MISMATCH", (3, 3))
    valid = check_output_size(_record(8, 3, 2, (0, 0), 3))  # 8 - 3 = 5: the last column is never read
    assert (valid.status, valid.leftover, valid.leftover_real) == ("not divisible", (1, 1), (1, 1))
    same = check_output_size(_record(8, 3, 2, (1, 1), 4))  # 8 - 3 + 2 = 7: what is dropped is padding
    assert (same.status, same.leftover, same.leftover_real) == ("not divisible", (1, 1), (0, 0))
    pool = LayerRecord(module=None, kind="dense", input_shape=(1, 4), output_shape=(1, 2), params=10, macs=8)
    assert check_output_size(pool) is None


class _Liar(nnx.Module):
    """A layer whose record claims a 3x3 window with stride 1 but keeps every other pixel."""

    def __call__(self, x):
        y = x[:, ::2, ::2]
        recording.record(self, "pool", x, y, kernel=(3, 3), stride=1, padding=((0, 0), (0, 0)), op="max")
        return y


class _Miscounting(nnx.Module):
    def __init__(self):
        self.pool = Pool2d("max", 3, 2, padding="valid")  # 8 -> 3, and (8 - 3) / 2 is not whole
        self.liar = _Liar()  # 3 -> 2, where (3 - 3) / 1 + 1 = 1

    def __call__(self, x):
        return self.liar(self.pool(x))


def test_a_mismatch_and_a_stride_that_does_not_fit_are_reported():
    summary = summarize_module(_Miscounting(), (8, 8, 1))
    assert [row.check.status for row in summary.rows] == ["not divisible", "MISMATCH"]
    assert summary.notes() == [
        "pool: stride 2 doesn't fit: W - F + P_low + P_high is not a multiple of it, so the last 1 row and "
        "1 column of the padded input are never read (1 row and 1 column of the image lost)",
        "liar: output 2x2 but (W - F + P_low + P_high) / S + 1 gives 1x1",
    ]


def test_formats():
    summary = summarize_model("lenet", {}, (28, 28, 1), 10)
    data = json.loads(render(summary, "json"))
    assert data["total_params"] == 61_706 and len(data["layers"]) == 7
    assert data["layers"][0]["receptive_field"] == [5, 5] and data["layers"][-1]["receptive_field"] == "global"
    table = list(csv.DictReader(io.StringIO(render(summary, "csv"))))
    assert [r["layer"] for r in table] == ["conv1", "pool1", "conv2", "pool2", "fc1", "fc2", "head", "total"]
    assert table[-1]["params"] == "61706"
    markdown = render(summary, "markdown").splitlines()
    header = next(i for i, line in enumerate(markdown) if line.startswith("| layer |"))
    assert markdown[header + 1].startswith("|---") and markdown[header + 2].startswith("| conv1 | conv | 5x5/1/0 |")


@pytest.mark.slow
def test_command_prints_json_for_a_dataset(cnnexp, tmp_path):
    result = cnnexp("summary", "model=lenet", "data=digits", "format=json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["total_params"] == 61_706 and data["input_shape"] == [8, 8, 1] and data["num_classes"] == 10
    assert [layer["name"] for layer in data["layers"]][-1] == "head"
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.slow
def test_command_takes_an_input_shape_instead_of_data(cnnexp):
    result = cnnexp("summary", "model=lenet", "input_shape=[224,224,3]", "num_classes=1000")
    assert result.returncode == 0, result.stderr
    assert "lenet on 224x224x3, 1000 classes" in result.stdout
    assert "total" in result.stdout and "receptive field" in result.stdout


@pytest.mark.slow
def test_command_reads_only_the_declared_shape_of_unprepared_tfds_data(cnnexp):
    # The fixture's TFDS_DATA_DIR is empty: Fashion-MNIST is not prepared, and need not be.
    result = cnnexp("summary", "data=fashion_mnist", "format=csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].startswith("total,") and "28x28x1" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model=nope"], "unknown model=nope; choose one of alexnet"),
        (["format=xml"], "invalid format='xml'"),
        (["input_shape=[0,5]"], "invalid input_shape=[0, 5]"),
        (["num_classes=0", "input_shape=[8,8,1]"], "invalid num_classes=0"),
        (["model.widht=2", "data=digits"], "model.widht"),
        (["data=imagenet2012"], "give input_shape=[H,W,C]"),
    ],
)
def test_bad_input_is_one_line_exit_2(cnnexp, overrides, message):
    result = cnnexp("summary", *overrides)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_command_help(cnnexp):
    result = cnnexp("summary", "--help")
    assert result.returncode == 0
    assert "cnnexp summary" in result.stdout and "model: " in result.stdout
    assert "summary" in cnnexp("--help").stdout

"""The tiny recall model: gate restrictions per kind, causality, linear-attention limit, training."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from kdalib.ops import chunk_kda
from kdalib.tasks.model import LINEAR_BETA, MIXER_KINDS, Block, RecallMixer, TinyRecallModel
from kdalib.tasks.mqar import MQARSpec
from kdalib.tasks.train import TrainConfig, matmul_precision, steps_within_budget, sweep, train_recall_model


@pytest.fixture
def one_thread():
    """Tiny models train several times faster on one thread than on two busy ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _mixer(kind: str, seed: int = 0) -> RecallMixer:
    torch.manual_seed(seed)
    return RecallMixer(d_model=16, num_heads=2, head_dim=8, kind=kind)


@pytest.mark.parametrize("kind", MIXER_KINDS)
def test_gates_are_restricted_per_kind(kind):
    x = torch.randn(2, 12, 16)
    g, beta = _mixer(kind).gates(x)
    assert g.shape == (2, 12, 2, 8) and beta.shape == (2, 12, 2)
    assert g.dtype == torch.float32 and bool((g <= 0).all())
    if kind in ("linear", "deltanet"):
        assert bool((g == 0).all())
    if kind in ("linear", "mamba2"):  # no delta rule
        assert bool((beta == LINEAR_BETA).all())
    else:
        assert bool(((beta > 0) & (beta < 1)).all())
    if kind in ("gated_deltanet", "mamba2"):  # one decay per head: equal across key channels
        assert torch.equal(g, g[..., :1].expand_as(g)) and bool((g < 0).all())
    if kind == "kda":  # one decay per key channel
        assert bool((g.std(dim=-1) > 0).all())


@pytest.mark.parametrize("kind", MIXER_KINDS)
def test_model_is_causal(kind):
    torch.manual_seed(0)
    model = TinyRecallModel(vocab_size=11, kind=kind, d_model=16, num_layers=2, num_heads=2)
    tokens = torch.randint(11, (2, 40))
    changed = tokens.clone()
    changed[:, 25:] = torch.randint(11, (2, 15))
    with torch.no_grad():
        logits, logits_changed = model(tokens), model(changed)
    assert logits.shape == (2, 40, 11)
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits[:, :25], logits_changed[:, :25])
    assert not torch.allclose(logits[:, 25:], logits_changed[:, 25:])


def test_linear_kind_is_linear_attention_through_the_kda_operator():
    # beta = eps with values / eps leaves an erasure of relative size eps per token.
    mixer = _mixer("linear")
    with torch.no_grad():
        q, k, v, g, beta = mixer.operator_inputs(torch.randn(2, 100, 16))
        output, _ = chunk_kda(q, k, v, g, beta)
    q64, k64, v64 = (x.double().transpose(1, 2) for x in (q, k, v * LINEAR_BETA))  # [B, H, T, D]
    scores = (q64 @ k64.transpose(-1, -2)) * q.shape[-1] ** -0.5
    reference = (scores.tril() @ v64).transpose(1, 2)
    error = (output.double() - reference).norm() / reference.norm()
    assert error < 1e-4


def test_mamba2_kind_is_scalar_decay_linear_attention_through_the_kda_operator():
    # S_t = a_t S_{t-1} + k_t v_t^T, one a_t = exp(g_t) per head: o_t = sum_s (a_{s+1} ... a_t) (q_t . k_s) v_s
    mixer = _mixer("mamba2")
    with torch.no_grad():
        q, k, v, g, beta = mixer.operator_inputs(torch.randn(2, 100, 16))
        output, _ = chunk_kda(q, k, v, g, beta)
    q64, k64, v64 = (x.double().transpose(1, 2) for x in (q, k, v * LINEAR_BETA))  # [B, H, T, D]
    log_decay = g[..., 0].double().cumsum(dim=1).transpose(1, 2)  # [B, H, T]
    weights = (log_decay.unsqueeze(-1) - log_decay.unsqueeze(-2)).tril().exp().tril()
    scores = (q64 @ k64.transpose(-1, -2)) * q.shape[-1] ** -0.5 * weights
    reference = (scores @ v64).transpose(1, 2)
    error = (output.double() - reference).norm() / reference.norm()
    assert error < 1e-4
    # and the decay matters: without it the output is another one
    no_decay = ((q64 @ k64.transpose(-1, -2)) * q.shape[-1] ** -0.5).tril() @ v64
    assert (output.double() - no_decay.transpose(1, 2)).norm() / reference.norm() > 1e-2


def test_unknown_kind_is_rejected():
    with pytest.raises(ValueError, match="kind"):
        RecallMixer(16, 2, 8, "mamba")
    with pytest.raises(ValueError, match="kinds"):
        sweep(("kda", "mamba"), [MQARSpec(8, 2)], [0], TrainConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="d_model"):
        TinyRecallModel(11, "kda", d_model=0)


def test_training_reduces_the_loss_and_is_reproducible(one_thread):
    config = TrainConfig(steps=25, batch_size=16, lr=1e-2, d_model=32, num_layers=1, num_heads=2, eval_batches=1)
    spec = MQARSpec(16, 2, 9)
    first = train_recall_model("deltanet", spec, seed=0, config=config)
    again = train_recall_model("deltanet", spec, seed=0, config=config)
    assert len(first.losses) == 25 and all(torch.isfinite(torch.tensor(first.losses)))
    assert sum(first.losses[-5:]) / 5 < first.losses[0]
    assert 0.0 <= first.accuracy <= 1.0
    assert first.losses == pytest.approx(again.losses, rel=1e-5)


def test_steps_within_budget_stays_within_its_bounds():
    config = TrainConfig(steps=50, batch_size=4, d_model=16, num_layers=1, num_heads=2)
    specs = [MQARSpec(16, 2, 9)]
    assert steps_within_budget(specs, runs=1, config=config, budget_s=1e6, probe_steps=1) == 50
    assert steps_within_budget(specs, runs=1000, config=config, budget_s=1e-3, min_steps=7, probe_steps=1) == 7
    with pytest.raises(ValueError, match="runs"):
        steps_within_budget(specs, runs=0, config=config, budget_s=1.0)
    with pytest.raises(ValueError, match="probe_steps: expected a positive int, got 0"):
        steps_within_budget(specs, runs=1, config=config, budget_s=1.0, probe_steps=0)


def test_a_seeded_smoke_run_learns_recall(one_thread):
    """The default suite's check that training works: 120 steps on 2 pairs in 16 tokens (chance 1/8)
    reach 4x chance (the run reaches 1.0 here; a broken gradient or a frozen state stays near 1/8)."""
    config = TrainConfig(steps=120, batch_size=16, lr=1e-2, d_model=32, num_layers=1, num_heads=2, eval_batches=4)
    spec = MQARSpec(16, 2, 17)
    result = train_recall_model("kda", spec, seed=0, config=config)
    assert result.accuracy > 4 / spec.num_keys
    assert result.losses[-1] < result.losses[0] / 4


def test_blocks_are_modules_with_a_mixer_and_an_mlp():
    model = TinyRecallModel(vocab_size=17, kind="kda", d_model=16, num_layers=2)
    assert [type(block) for block in model.blocks] == [Block, Block]
    x = torch.randn(2, 5, 16)
    block = model.blocks[0]
    mixed = x + block.mixer(block.mixer_norm(x))
    assert torch.equal(block(x), mixed + block.mlp(block.mlp_norm(mixed)))


@pytest.mark.slow
def test_kda_model_learns_recall_well_above_chance(one_thread):
    config = TrainConfig(steps=300, batch_size=32, lr=1e-2, d_model=64, num_layers=1, num_heads=2, eval_batches=4)
    spec = MQARSpec(32, 4, 33)
    result = train_recall_model("kda", spec, seed=0, config=config)
    chance = 1 / spec.num_keys
    assert result.accuracy > 5 * chance


def test_training_on_other_tasks_records_an_accuracy_curve(one_thread):
    from kdalib.tasks.palindrome import PalindromeSpec
    from kdalib.tasks.stack import StackSpec

    config = TrainConfig(steps=6, batch_size=4, lr=1e-2, d_model=16, num_layers=1, num_heads=2, eval_every=2)
    for spec in (PalindromeSpec(12, 6), StackSpec(12, 2, 3), MQARSpec(13, 4, 9, "separated")):
        result = train_recall_model("mamba2", spec, seed=0, config=config)
        assert [step for step, _ in result.curve] == [2, 4, 6]
        assert result.curve[-1][1] == result.accuracy and result.lr == 1e-2
        assert result.peak_accuracy == max(accuracy for _, accuracy in result.curve)


def test_a_run_stops_at_the_first_evaluation_that_reaches_stop_accuracy(one_thread):
    config = TrainConfig(steps=120, batch_size=16, lr=1e-2, d_model=32, num_layers=1, num_heads=2, eval_every=10)
    spec = MQARSpec(16, 2, 17)
    full = train_recall_model("kda", spec, seed=0, config=config)
    stop = 0.5
    reached = next(step for step, accuracy in full.curve if accuracy >= stop)  # this run reaches 1.0
    assert reached < config.steps
    early = train_recall_model("kda", spec, seed=0, config=dataclasses.replace(config, stop_accuracy=stop))
    assert early.steps_done == reached and full.steps_done == config.steps
    assert early.curve == full.curve[: len(early.curve)] and early.accuracy == early.curve[-1][1] >= stop
    assert early.losses == pytest.approx(full.losses[:reached], rel=1e-5)  # the same schedule up to the stop


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"steps": 0}, "TrainConfig.steps"),
        ({"eval_every": -1}, "TrainConfig.eval_every"),
        ({"lr": float("nan")}, "TrainConfig.lr"),
        ({"batch_size": 2.0}, "TrainConfig.batch_size"),
        ({"stop_accuracy": 0.0}, "TrainConfig.stop_accuracy"),
        ({"stop_accuracy": 1.5}, "TrainConfig.stop_accuracy"),
    ],
)
def test_train_config_names_the_bad_field(changes, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_training_options_are_checked():
    with pytest.raises(ValueError, match="TrainConfig.use_triton"):
        TrainConfig(use_triton=1)
    with pytest.raises(ValueError, match="TrainConfig.cuda_graph"):
        TrainConfig(cuda_graph=None)
    with pytest.raises(ValueError, match="use_triton"):
        TinyRecallModel(11, "kda", use_triton="yes")
    with pytest.raises(ValueError, match="cuda_graph: CUDA graphs need a CUDA device"):
        train_recall_model("kda", MQARSpec(16, 2, 9), seed=0, config=TrainConfig(steps=1, cuda_graph=True))
    with pytest.raises(ValueError, match="TrainConfig.operator_dtype"):
        TrainConfig(operator_dtype="bf16")
    with pytest.raises(ValueError, match="TrainConfig.matmul_precision"):
        TrainConfig(matmul_precision="low")
    with pytest.raises(ValueError, match="operator_dtype"):
        TinyRecallModel(11, "kda", operator_dtype=torch.int32)


def test_the_matmul_precision_holds_for_the_run_and_is_restored():
    seen = []
    with matmul_precision("high"):
        seen.append(torch.get_float32_matmul_precision())
    assert seen == ["high"] and torch.get_float32_matmul_precision() == "highest"
    with pytest.raises(RuntimeError, match="inside"), matmul_precision("medium"):
        raise RuntimeError("inside")
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.parametrize("kind", ["kda", "linear"])
def test_a_bfloat16_operator_trains_like_the_float32_one(kind, one_thread):
    """The operator's inputs cast to bfloat16 and its output cast back: the model stays float32 and
    the losses follow the float32 run to bfloat16's precision (the linear kind's values, scaled by
    1 / LINEAR_BETA, included)."""
    spec = MQARSpec(32, 2, 9)
    losses = {}
    for dtype in (None, "bfloat16"):
        config = TrainConfig(steps=5, batch_size=4, lr=1e-2, d_model=32, num_layers=1, operator_dtype=dtype)
        losses[dtype] = train_recall_model(kind, spec, seed=0, config=config).losses
    assert losses["bfloat16"] == pytest.approx(losses[None], rel=2e-2)
    assert losses["bfloat16"] != losses[None]  # the operator did run in bfloat16
    model = TinyRecallModel(9, kind, d_model=32, num_layers=1, operator_dtype=torch.bfloat16)
    assert model(torch.zeros(2, 8, dtype=torch.long)).dtype == torch.float32


def test_the_triton_training_path_trains_like_the_pytorch_form(one_thread):
    """``use_triton=True`` sends the operator through the Triton scan and its backward (in the
    interpreter here): the same model, data and seed give the same losses as the PyTorch form."""
    pytest.importorskip("triton")
    spec = MQARSpec(32, 2, 9)
    losses = {}
    for use_triton in (False, True):
        config = TrainConfig(
            steps=4, batch_size=2, lr=1e-2, d_model=32, num_layers=1, num_heads=2, use_triton=use_triton
        )
        losses[use_triton] = train_recall_model("kda", spec, seed=0, config=config).losses
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("operator_dtype", [None, "bfloat16"], ids=["fp32", "bf16-operator"])
@pytest.mark.parametrize("kind", ["kda", "linear"])
def test_gpu_graphed_training_steps_match_eager_ones(kind, operator_dtype):
    """Replaying the training forward and backward as CUDA graphs runs the same kernels as
    launching them one by one: the losses and the held-out accuracy of a short run agree."""
    spec = MQARSpec(256, 8, 65)
    runs = {}
    for graph in (False, True):
        config = TrainConfig(
            steps=6,
            batch_size=8,
            lr=3e-3,
            d_model=64,
            num_heads=2,
            cuda_graph=graph,
            operator_dtype=operator_dtype,
            matmul_precision="high",
        )
        runs[graph] = train_recall_model(kind, spec, seed=0, config=config, device="cuda")
    assert runs[True].losses == pytest.approx(runs[False].losses, rel=1e-4)
    assert runs[True].accuracy == pytest.approx(runs[False].accuracy, abs=1e-3)

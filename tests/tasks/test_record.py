"""The grid record: what makes two runs the same (the key), the code version, and the file."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest

from kdalib.tasks.mqar import MQARSpec
from kdalib.tasks.palindrome import PalindromeSpec
from kdalib.tasks.record import EXPERIMENT_MODULES, FORMAT, GridRecord, RecordError, RunSettings, code_version
from kdalib.tasks.train import TrainConfig, TrainResult

TASKS = Path(__file__).resolve().parents[2] / "kdalib" / "tasks"


def _settings(**changes) -> RunSettings:
    base = RunSettings(
        task="mqar",
        kind="kda",
        seed=0,
        spec=MQARSpec(256, 16, 513, "separated"),
        config=TrainConfig(steps=800, batch_size=32, lr=1e-3, d_model=256, eval_every=25),
        device="cuda",
        code="abc",
    )
    return dataclasses.replace(base, **changes)


def _result(settings: RunSettings, curve=((25, 0.1), (50, 0.9))) -> TrainResult:
    return TrainResult(
        settings.kind,
        settings.spec,
        settings.seed,
        curve[-1][1],
        losses=[2.0] * 25 + [1.0] * 25,
        seconds=3.5,
        curve=list(curve),
        lr=settings.config.lr,
        steps_done=curve[-1][0],
    )


def test_equal_settings_have_equal_keys_and_every_setting_changes_the_key():
    base = _settings()
    assert base.key == _settings().key and len(base.key) == 16
    changed = [
        _settings(task="palindrome", spec=PalindromeSpec(256, 66)),
        _settings(kind="gated_deltanet"),
        _settings(seed=1),
        _settings(spec=MQARSpec(512, 32, 513, "separated")),
        _settings(spec=MQARSpec(256, 16, 257, "separated")),
        _settings(device="cpu"),
        _settings(code="abd"),
    ] + [
        _settings(config=dataclasses.replace(base.config, **{name: value}))
        for name, value in (
            ("steps", 1200),
            ("lr", 5e-4),
            ("batch_size", 16),
            ("d_model", 128),
            ("num_layers", 1),
            ("eval_every", 50),
            ("operator_dtype", "bfloat16"),
            ("matmul_precision", "high"),
            ("cuda_graph", True),
            ("stop_accuracy", 0.9),
        )
    ]
    keys = [settings.key for settings in changed]
    assert base.key not in keys and len(set(keys)) == len(keys)


def test_settings_round_trip_through_plain_values():
    settings = _settings()
    assert RunSettings.from_dict(json.loads(json.dumps(settings.as_dict()))) == settings
    with pytest.raises(ValueError, match="needs a MQARSpec"):
        _settings(spec=PalindromeSpec(256))


def _copy_modules(folder: Path) -> Path:
    for module in EXPERIMENT_MODULES:
        shutil.copyfile(TASKS / f"{module}.py", folder / f"{module}.py")
    return folder


def test_the_code_version_ignores_documentation_and_follows_the_code(tmp_path):
    folder = _copy_modules(tmp_path)
    assert code_version(folder) == code_version()
    train = folder / "train.py"
    original = train.read_text()
    train.write_text(
        original.replace('"""Training a tiny model', '"""Training, reworded: a tiny model', 1).replace(
            "def _learning_rate(step: int, config: TrainConfig) -> float:\n",
            "def _learning_rate(step: int, config: TrainConfig) -> float:\n    # a new comment\n",
        )
    )
    assert train.read_text() != original and code_version(folder) == code_version()
    train.write_text(original.replace("warmup = max(1, config.steps // 10)", "warmup = max(1, config.steps // 20)"))
    assert code_version(folder) != code_version()


def test_a_run_added_is_on_disk_and_reads_back(tmp_path):
    path = tmp_path / "grid.json"
    record = GridRecord(path)
    assert len(record) == 0 and not path.exists()
    settings = _settings()
    record.add(settings, _result(settings), {"device": "cuda", "commit": "c0ffee"})
    assert [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == ["grid.json"]  # no temporary file left
    again = GridRecord(path)
    assert settings in again and _settings(seed=1) not in again
    result = again.result(settings.key)
    assert result.curve == [(25, 0.1), (50, 0.9)] and result.accuracy == 0.9 and result.steps_done == 50
    assert (result.kind, result.spec, result.seed, result.lr) == ("kda", settings.spec, 0, 1e-3)
    stored = json.loads(path.read_text())
    assert stored["format"] == FORMAT
    assert stored["runs"][settings.key]["result"]["loss"] == [2.0, 1.0]
    assert stored["runs"][settings.key]["provenance"]["commit"] == "c0ffee"


def test_a_failed_write_keeps_the_previous_record(tmp_path, monkeypatch):
    path = tmp_path / "grid.json"
    record = GridRecord(path)
    first = _settings()
    record.add(first, _result(first), {})
    before = path.read_text()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("kdalib.tasks.record.os.replace", broken_replace)
    second = _settings(seed=1)
    with pytest.raises(OSError, match="disk full"):
        record.add(second, _result(second), {})
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir() if p.suffix != ".lock"] == ["grid.json"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "unreadable grid record"),
        ('{"format": "other", "runs": {}}', "not a grid record"),
        (json.dumps({"format": FORMAT, "runs": {"k": {"settings": {"task": "copy"}}}}), "run k: malformed entry"),
    ],
)
def test_a_bad_record_is_named(tmp_path, text, message):
    path = tmp_path / "grid.json"
    path.write_text(text)
    with pytest.raises(RecordError, match=message) as info:
        GridRecord(path)
    assert str(path) in str(info.value)


def test_a_run_whose_settings_do_not_match_its_key_is_refused(tmp_path):
    path = tmp_path / "grid.json"
    record = GridRecord(path)
    settings = _settings()
    record.add(settings, _result(settings), {})
    data = json.loads(path.read_text())
    data["runs"][settings.key]["settings"]["seed"] = 7  # edited by hand
    path.write_text(json.dumps(data))
    with pytest.raises(RecordError, match="hash to"):
        GridRecord(path)

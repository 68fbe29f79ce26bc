"""The record of a synthetic-task grid that is trained over several commands.

A grid too large for one command (one GPU call has a time limit) is trained a few runs at a
time; each finished run is written into one JSON file as soon as it ends, and a later command
skips every run that file already holds. What makes two runs "the same" is their
:class:`RunSettings` and its :attr:`~RunSettings.key`:

* every setting that changes what is trained or measured: task and its problem (the spec's
  fields: length, vocabulary, pairs, stacks...), mechanism, seed, peak learning rate, steps and
  the whole :class:`~kdalib.tasks.train.TrainConfig` (model size, batch, precision, operator
  path, CUDA graphs, evaluation interval, early stop), and the device type;
* the **code version** of the experiment (:func:`code_version`): the modules that generate the
  data, build the model and train it (``mqar``, ``palindrome``, ``stack``, ``model``,
  ``train``), hashed through their syntax tree with docstrings and comments left out, so that
  a change to the data, the model or the loop starts a new record while documentation and
  formatting edits do not. ``kdalib/ops`` is left out on purpose: its paths (PyTorch, Triton,
  16-bit) are tested against one reference to rounding, and making the kernels faster must
  not throw away the runs already recorded; the path a run took is in its settings, and the
  commit and device name of every run are kept in its provenance;
* not the commit: a commit that touches nothing above changes no result.

The file (``format`` :data:`FORMAT`) maps each key to its settings, its result (accuracy curve,
training loss per evaluation interval, steps done, wall time) and its provenance. It is
rewritten atomically (a temporary file, then a rename) after every run, so an interrupted
command leaves the runs it finished and nothing half-written; the rewrite holds a lock on the file
and reads it again first, so two commands training different runs into one record keep each
other's runs.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from kdalib.locking import locked
from kdalib.tasks.mqar import MQARSpec
from kdalib.tasks.palindrome import PalindromeSpec
from kdalib.tasks.stack import StackSpec
from kdalib.tasks.train import TrainConfig, TrainResult

FORMAT = "kdalib-synthetic-grid/1"
EXPERIMENT_MODULES = ("mqar", "palindrome", "stack", "model", "train")
"""The modules of :mod:`kdalib.tasks` whose code decides what a run trains and measures."""
SPEC_TYPES = {"palindrome": PalindromeSpec, "mqar": MQARSpec, "stack": StackSpec}


def _is_docstring(node: ast.AST) -> bool:
    return isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)


def _canonical(node: Any) -> str:
    """A text of the syntax tree that does not depend on the Python version: fields that are
    empty or None (newer versions add such fields, e.g. ``type_params``) are left out, and so
    are bare string statements (docstrings, attribute docstrings)."""
    if isinstance(node, ast.AST):
        parts = []
        for name in node._fields:
            value = getattr(node, name, None)
            if isinstance(value, list):
                value = [item for item in value if not _is_docstring(item)]
            if value is None or value == []:
                continue
            parts.append(f"{name}={_canonical(value)}")
        return f"{type(node).__name__}({','.join(parts)})"
    if isinstance(node, list):
        return f"[{','.join(_canonical(item) for item in node)}]"
    return repr(node)


def code_version(folder: Path | None = None) -> str:
    """12 hex digits identifying the code of :data:`EXPERIMENT_MODULES` in ``folder`` (default:
    this package), docstrings and comments excluded (see the module docstring)."""
    folder = folder or Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for module in EXPERIMENT_MODULES:
        tree = ast.parse((folder / f"{module}.py").read_text(encoding="utf-8"))
        digest.update(f"{module}:{_canonical(tree)}\n".encode())
    return digest.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything that defines one run of a grid (see the module docstring).

    Attributes:
        task: ``palindrome``, ``mqar`` or ``stack``.
        kind: mechanism (:data:`~kdalib.tasks.model.MIXER_KINDS`).
        seed: seed of the initialisation and the data.
        spec: the task's problem (:class:`~kdalib.tasks.palindrome.PalindromeSpec`, ...).
        config: the run's :class:`~kdalib.tasks.train.TrainConfig`.
        device: ``cpu`` or ``cuda``.
        code: :func:`code_version` of the code that trains it.
    """

    task: str
    kind: str
    seed: int
    spec: Any
    config: TrainConfig
    device: str
    code: str

    def __post_init__(self) -> None:
        if self.task not in SPEC_TYPES:
            raise ValueError(f"RunSettings.task: expected one of {', '.join(SPEC_TYPES)}, got {self.task!r}")
        if not isinstance(self.spec, SPEC_TYPES[self.task]):
            raise ValueError(
                f"RunSettings.spec: task {self.task!r} needs a {SPEC_TYPES[self.task].__name__}, "
                f"got {type(self.spec).__name__}"
            )

    @property
    def length(self) -> int:
        """Training length in tokens."""
        return self.spec.seq_len

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values (what the key is computed from)."""
        return {
            "task": self.task,
            "kind": self.kind,
            "seed": self.seed,
            "spec": dataclasses.asdict(self.spec),
            "config": dataclasses.asdict(self.config),
            "device": self.device,
            "code": self.code,
        }

    @property
    def key(self) -> str:
        """16 hex digits of the SHA-256 of :meth:`as_dict` in canonical JSON: equal settings,
        equal key, whatever the commit."""
        text = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        """Inverse of :meth:`as_dict`; raises ValueError or TypeError on a malformed entry."""
        task = data["task"]
        if task not in SPEC_TYPES:
            raise ValueError(f"unknown task {task!r}")
        return cls(
            task=task,
            kind=data["kind"],
            seed=data["seed"],
            spec=SPEC_TYPES[task](**data["spec"]),
            config=TrainConfig(**data["config"]),
            device=data["device"],
            code=data["code"],
        )


def _loss_per_interval(losses: list[float], curve: list[tuple[int, float]]) -> list[float | None]:
    """Mean training loss over each interval between evaluations (one value per curve point;
    None where the losses were not kept)."""
    means, start = [], 0
    for step, _ in curve:
        chunk = losses[start:step]
        means.append(sum(chunk) / len(chunk) if chunk else None)
        start = step
    return means


class RecordError(ValueError):
    """A grid record that cannot be read, naming the file and what is wrong."""


class GridRecord:
    """The runs of a grid recorded so far, backed by one JSON file.

    Args:
        path: the record's file; it need not exist yet (an empty record).

    Raises:
        RecordError: when the file exists but is not a record of this format, or an entry's key
            does not match its settings.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.runs: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            self._load()

    def _load(self) -> None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RecordError(f"{self.path}: unreadable grid record ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("runs"), dict):
            raise RecordError(f"{self.path}: not a grid record (expected 'format': {FORMAT!r} and a 'runs' mapping)")
        for key, entry in data["runs"].items():
            try:
                settings = RunSettings.from_dict(entry["settings"])
                curve = [(int(step), float(accuracy)) for step, accuracy in entry["result"]["curve"]]
            except (KeyError, TypeError, ValueError) as exc:
                raise RecordError(f"{self.path}: run {key}: malformed entry ({exc})") from exc
            if settings.key != key:
                raise RecordError(f"{self.path}: run {key}: its settings hash to {settings.key}, not to its key")
            if not curve:
                raise RecordError(f"{self.path}: run {key}: empty accuracy curve")
            self.runs[key] = entry

    def __contains__(self, settings: RunSettings) -> bool:
        return settings.key in self.runs

    def __len__(self) -> int:
        return len(self.runs)

    def settings(self, key: str) -> RunSettings:
        """The settings of the recorded run ``key``."""
        return RunSettings.from_dict(self.runs[key]["settings"])

    def result(self, key: str) -> TrainResult:
        """The recorded run ``key`` as a :class:`~kdalib.tasks.train.TrainResult` (no per-step losses)."""
        settings, result = self.settings(key), self.runs[key]["result"]
        curve = [(int(step), float(accuracy)) for step, accuracy in result["curve"]]
        return TrainResult(
            settings.kind,
            settings.spec,
            settings.seed,
            curve[-1][1],
            seconds=float(result["seconds"]),
            curve=curve,
            lr=settings.config.lr,
            steps_done=int(result["steps_done"]),
        )

    def add(self, settings: RunSettings, result: TrainResult, provenance: dict[str, Any]) -> None:
        """Adds a finished run and rewrites the file atomically.

        The file is locked (:func:`kdalib.locking.locked`) and read again first, so runs
        that another command recorded in the meantime are kept.
        """
        entry = {
            "settings": settings.as_dict(),
            "result": {
                "curve": [[step, accuracy] for step, accuracy in result.curve],
                "loss": _loss_per_interval(result.losses, result.curve),
                "steps_done": result.steps_done,
                "seconds": round(result.seconds, 3),
            },
            "provenance": provenance,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with locked(self.path):
            if self.path.exists():
                self._load()
            self.runs[settings.key] = entry
            self.save()

    def save(self) -> None:
        """Writes the record: a temporary file in the same folder, then an atomic rename."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"format": FORMAT, "runs": dict(sorted(self.runs.items()))}, indent=1) + "\n"
        handle, temporary = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        umask = os.umask(0)
        os.umask(umask)
        try:
            os.chmod(temporary, 0o666 & ~umask)  # a plain file's permissions, not mkstemp's 0600
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(text)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

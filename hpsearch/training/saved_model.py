"""The network `hpsearch final` keeps, and `load_model`, which gives it back ready to use.

RUN/final/model.pt is the network's state_dict, nothing else (read with torch.load(...,
weights_only=True): tensors, never code); RUN/final/model.json says how to rebuild it: the resolved
spec (model and training settings with the searched values applied), for a user's network the
factory reference, its file's sha256 and text and the text of each local module it imports, the
preprocessing statistics, the classes, and the hpsearch and torch versions. `load_model(RUN)`
returns (network in eval mode, preprocess) such that `network(preprocess(uint8_images))` gives logits.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hpsearch.data import Dataset
from hpsearch.errors import SpecError, StoreError, first_line
from hpsearch.runs.store import atomic_write_bytes, read_json, write_json
from hpsearch.spec.schema import ModelSpec, Spec
from hpsearch.training.factory import FactorySource, LocalModule, register_source
from hpsearch.training.models import build_model
from hpsearch.version import __version__

MODEL_FILE, INFO_FILE = "model.pt", "model.json"
FORMAT = 1  # model.json's layout


@dataclass(frozen=True)
class Preprocessor:
    """What the network expects of its input, from the statistics of the data it trained on:
    uint8 images (N, C, H, W) -> float32 (x/255 - shift)/scale; float features -> (x - shift)/scale.
    The same arithmetic as training used (Dataset.normalize), so predictions match to the bit."""

    shift: torch.Tensor
    scale: torch.Tensor
    unit: float  # 255 for uint8 images, 1 for float features
    classes: tuple[str, ...]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        gain = 1.0 / (self.unit * self.scale.to(x.device))
        offset = -self.shift.to(x.device) / self.scale.to(x.device)
        return torch.addcmul(offset, x.to(torch.float32), gain)


def save_model(
    final_dir: Path,
    state: bytes,
    spec: Spec,
    data: Dataset,
    factory: FactorySource | None,
    info: dict[str, Any],
) -> Path:
    """model.pt (the bytes of a saved state_dict) and model.json; a model an earlier final kept is
    renamed model-attempt-K.pt/.json first, not overwritten."""
    _set_aside(final_dir)
    model = spec.model
    doc: dict[str, Any] = {
        "format": FORMAT,
        "hpsearch": __version__,
        "torch": torch.__version__,
        "model": model.model_dump(mode="json"),
        "spec": spec.model_dump(mode="json"),
        "input_shape": list(data.input_shape),
        "input_dtype": str(data.x_train.dtype).removeprefix("torch."),
        "classes": list(data.classes),
        "num_classes": data.num_classes,
        "preprocess": {
            "kind": spec.data.preprocess.value,
            "shift": data.shift.cpu().tolist(),
            "scale": data.scale.cpu().tolist(),
            "unit": 255.0 if data.x_train.dtype == torch.uint8 else 1.0,
        },
        **info,
    }
    if model.kind == "python":
        doc["factory"] = {
            "reference": model.factory,
            "path": factory.path if factory else None,
            "sha256": factory.sha256 if factory else None,
            "source": factory.text if factory else None,  # the code the network ran: rebuilt from it
            "modules": [
                {"name": m.name, "path": m.path, "package": m.package, "source": m.text}
                for m in (factory.modules if factory else ())
            ],
        }
    atomic_write_bytes(final_dir / MODEL_FILE, state)
    write_json(final_dir / INFO_FILE, doc)
    return final_dir / MODEL_FILE


def _set_aside(final_dir: Path) -> None:
    info = final_dir / INFO_FILE
    if not info.is_file():
        return
    try:
        attempt = read_json(info).get("attempt")
    except (StoreError, AttributeError):
        attempt = None
    tag = f"attempt-{attempt}" if isinstance(attempt, int) else "earlier"
    for name in (MODEL_FILE, INFO_FILE):
        path = final_dir / name
        if path.exists():
            path.replace(final_dir / f"{path.stem}-{tag}{path.suffix}")


def load_model(run: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, Preprocessor]:
    """The network `hpsearch final` kept in RUN (a run folder, its final/ folder or model.pt), in
    eval mode on `device`, and the preprocessing it expects:

        model, preprocess = load_model("runs/demo")
        logits = model(preprocess(images))  # images: uint8 (N, 3, 32, 32) for CIFAR-10

    Raises HpsearchError (one line) for a missing or unreadable model, and for a model.pt that is not a
    plain state_dict (a pickle with code in it is never run)."""
    final_dir = _final_dir(Path(run))
    doc = read_json(final_dir / INFO_FILE)
    if not isinstance(doc, dict) or "model" not in doc or "preprocess" not in doc:
        raise StoreError(f"{final_dir / INFO_FILE}: not a model.json hpsearch final wrote")
    state = read_state_dict(final_dir / MODEL_FILE)
    try:
        model = ModelSpec.model_validate(doc["model"])
    except ValueError as e:
        raise StoreError(f"{final_dir / INFO_FILE}: model: {str(e).splitlines()[0]}") from None
    if model.kind == "python":
        _register_factory(final_dir, doc)
    try:
        net = build_model(model, tuple(doc["input_shape"]), int(doc["num_classes"]))
        net.load_state_dict(state)
    except SpecError:
        raise
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise StoreError(
            f"{final_dir / MODEL_FILE}: does not fit the network model.json describes: {first_line(e)[:300]}"
        ) from None
    pre = doc["preprocess"]
    preprocess = Preprocessor(
        torch.tensor(pre["shift"], dtype=torch.float32),
        torch.tensor(pre["scale"], dtype=torch.float32),
        float(pre["unit"]),
        tuple(doc.get("classes", ())),
    )
    return net.to(device).eval(), preprocess


def _final_dir(run: Path) -> Path:
    if run.name == MODEL_FILE:
        return run.parent
    for folder in (run / "final", run):
        if (folder / INFO_FILE).is_file() or (folder / MODEL_FILE).is_file():
            return folder
    raise StoreError(f"{run}: no model here: hpsearch final {run} trains and keeps one (RUN/final/model.pt)")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state_dict read with weights_only=True: anything else is refused, never unpickled."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{path}: no such file") from None
    except OSError as e:
        raise StoreError(f"{path}: cannot read: {e.strerror or e}") from None
    try:
        state = torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise StoreError(
            f"{path}: refused: not a plain state_dict (it holds Python objects or code, which are never loaded: "
            f"{first_line(e)[:300]})"
        ) from None
    except Exception as e:  # a truncated or foreign file
        raise StoreError(f"{path}: cannot read as a PyTorch state_dict: {first_line(e)[:300]}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise StoreError(f"{path}: refused: not a plain state_dict (a dict of parameter names to tensors)")
    return state


def _register_factory(final_dir: Path, doc: dict[str, Any]) -> None:
    """A user's network is rebuilt from the code it trained with (model.json keeps its text and its
    local modules'), wherever this runs and whatever the files hold now."""
    factory = doc.get("factory") or {}
    source, path = factory.get("source"), factory.get("path")
    modules = [
        LocalModule.of(m["name"], m["path"], m["source"], bool(m.get("package")))
        for m in factory.get("modules") or []
        if isinstance(m, dict) and all(isinstance(m.get(k), str) for k in ("name", "path", "source"))
    ]
    if isinstance(source, str) and isinstance(path, str):
        register_source(FactorySource.of(path, source, modules))

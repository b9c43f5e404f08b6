"""YAML spec -> typed, frozen spec objects. Every validation message names file, key and value."""

from __future__ import annotations

import enum
import math
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from hpsearch.spec.choices import Activation, Init, Optimizer, Precision, Preprocess, Sampler
from hpsearch.spec.messages import did_you_mean, message, number, short


def spec_error(key: str, message: str, value: Any) -> PydanticCustomError:
    """An error raised inside a validator that names a key below the validated object."""
    # The value goes in as bounded text: pydantic renders every context entry with str(), which
    # never ends for a YAML alias bomb (a few lines nesting billions of elements).
    return PydanticCustomError("hpsearch", message, {"key": key, "shown": short(value)})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)

    @field_validator("*", mode="before")
    @classmethod
    def _enum_names_are_scalars(cls, v: Any, info: ValidationInfo) -> Any:
        # Checked before pydantic calls the Enum, whose error holds repr(v): endless for an alias bomb.
        kind = cls.model_fields[info.field_name or ""].annotation
        if isinstance(kind, type) and issubclass(kind, enum.Enum) and not isinstance(v, (str, int, float, bool)):
            names = [repr(m.value) for m in kind]
            raise spec_error("", f"must be one of {', '.join(names[:-1])} or {names[-1]}", v)
        return v


def _from_spec_dir(path: Path, info: ValidationInfo) -> Path:
    """A relative path in a spec file is relative to that file's folder (load_spec passes it)."""
    base = (info.context or {}).get("base")
    return Path(base) / path if base is not None and not path.is_absolute() else path


AUTO_VAL_SHARE = 10  # data.val_size left out: a tenth of the training set is held out for validation...
AUTO_VAL_CAP = 1000  # ...and at most this many: the lecture's 1,000 of CIFAR-10's 50,000


class DataSize(NamedTuple):
    """A dataset's size as counted before it is loaded (an npz's labels, a folder's listing)."""

    train: int  # training examples, before any validation split
    own_val: bool  # the data has its own validation split (an npz's x_val, a folder's val/): val_size is unused


class DataSpec(_Strict):
    dataset: Literal["cifar10", "synthetic", "npz", "folder"] = "cifar10"
    path: Path | None = None  # npz: the .npz file; folder: the image folder (train/<class>/...); relative to the spec
    resize: tuple[int, int] | None = None  # folder: resize every image to (height, width); else mixed sizes are refused
    root: Path | None = None  # where CIFAR-10 lives or is downloaded to; None: the user cache dir
    val_size: int | None = Field(None, ge=1)  # from the end of the training set; None: a tenth, at most 1000
    num_classes: int | None = Field(None, ge=2)  # npz: classes 0..num_classes-1 (else the largest label + 1)
    train_subset: int | None = Field(None, ge=1)  # first N training examples after the val split
    preprocess: Preprocess = Preprocess.MEAN_IMAGE
    download: bool = True
    synthetic_train: int = Field(5000, ge=10)  # synthetic dataset size (train + val)
    synthetic_test: int = Field(1000, ge=0)
    seed: int = Field(0, ge=0)  # synthetic data's own seed: every stage sees the same data, whatever search.seed

    @field_validator("path")
    @classmethod
    def _path_from_spec_dir(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        return None if v is None else _from_spec_dir(v, info)

    @model_validator(mode="after")
    def _path_for_user_data(self) -> DataSpec:
        if self.dataset in ("npz", "folder") and self.path is None:
            raise spec_error("path", f"is required for dataset {self.dataset} (the file or folder to read)", None)
        if self.dataset not in ("npz", "folder") and self.path is not None:
            raise spec_error("path", f"is for dataset npz or folder, not {self.dataset}", str(self.path))
        if self.resize is not None and (self.dataset != "folder" or min(self.resize) < 1):
            raise spec_error("resize", "is [height, width] >= 1, for dataset folder only", self.resize)
        if self.num_classes is not None and self.dataset != "npz":
            # A folder's classes are its train/ sub-folders; CIFAR-10 and the synthetic data have ten.
            raise spec_error("num_classes", f"is for dataset npz only, not {self.dataset}", self.num_classes)
        return self

    def val_examples(self, train: int) -> int:
        """The validation examples held out of `train` training examples: val_size, or when it is left
        out a tenth of them, at most 1,000 (so CIFAR-10 holds out 1,000 of 50,000 and a set of 1,500
        still trains on 1,350)."""
        return self.val_size if self.val_size is not None else max(1, min(AUTO_VAL_CAP, train // AUTO_VAL_SHARE))

    @property
    def known_num_classes(self) -> int | None:
        """Classes of the dataset when the spec alone says it: CIFAR-10's ten, the synthetic data's
        ten, an npz's data.num_classes; None for any other npz or a folder (the loaded Dataset knows)."""
        return 10 if self.dataset in ("cifar10", "synthetic") else self.num_classes


class ModelSpec(_Strict):
    kind: Literal["mlp", "convnet", "python"] = "mlp"
    # kind python: "nets.py:three_layer_convnet" (a file, relative to the spec) or "package.module:fn",
    # called as factory(input_shape, num_classes, **args) -> nn.Module mapping a batch to logits.
    factory: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)  # the factory's keyword arguments; each can be searched
    watch: tuple[
        str, ...
    ] = ()  # sanity-check: module class names whose outputs count as activations, besides ReLU, Tanh, ...
    hidden: tuple[int, ...] = (50,)  # layer widths (mlp) or channels per conv block (convnet)
    activation: Activation = Activation.RELU
    init: Init = Init.KAIMING
    init_std: float = Field(0.01, gt=0)  # used by small_random only
    bias_init: float = 0.0  # the lecture: "slightly positive biases (e.g. 0.01)" for ReLU
    dropout: float = Field(0.0, ge=0, lt=1)

    @field_validator("hidden", mode="before")
    @classmethod
    def _hidden_int_or_list(cls, v: Any) -> Any:
        return (v,) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("hidden")
    @classmethod
    def _hidden_positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        for i, width in enumerate(v):
            if width < 1:
                raise spec_error(str(i), "every layer width must be >= 1", width)
        return v

    @field_validator("factory")
    @classmethod
    def _factory_reference(cls, v: str | None, info: ValidationInfo) -> str | None:
        if v is None:
            return v
        where, _, name = v.rpartition(":")
        if not where or not name.isidentifier():
            raise spec_error("", "must be 'file.py:function' or 'package.module:function'", v)
        if is_factory_file(where):
            where = str(_from_spec_dir(Path(where), info))
        return f"{where}:{name}"

    @model_validator(mode="after")
    def _factory_for_python(self) -> ModelSpec:
        if self.kind == "python" and self.factory is None:
            raise spec_error("factory", "is required for kind python ('nets.py:my_net')", None)
        if self.kind != "python" and (self.factory is not None or self.args):
            raise spec_error("kind", "must be python for a factory and its args", self.kind)
        return self


class TrainSpec(_Strict):
    epochs: int = Field(5, ge=1)
    batch_size: int = Field(100, ge=1)
    optimizer: Optimizer = Optimizer.MOMENTUM
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)  # L2 penalty 0.5 * wd * sum(W^2) on weights, not biases
    momentum: float = Field(0.9, ge=0, lt=1)  # momentum and nesterov
    beta1: float = Field(0.9, ge=0, lt=1)  # adam
    beta2: float = Field(0.999, ge=0, lt=1)  # adam
    eps: float = Field(1e-8, gt=0)  # adam
    lr_decay: float = Field(1.0, gt=0, le=1)  # per-epoch multiplier of the learning rate
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = Precision.FP32  # auto: the stage chooses once, before any trial trains


class SanitySpec(_Strict):
    """Settings of `hpsearch sanity-check` (the lecture's steps 1-3 and its activation statistics)."""

    initial_batches: int = Field(5, ge=1)  # minibatches averaged for the initial loss
    activation_batch: int = Field(256, ge=2)  # examples in the forward pass for activation statistics
    overfit_examples: int = Field(20, ge=1)  # "take the first 20 examples from CIFAR-10"
    overfit_epochs: int = Field(200, ge=1)
    overfit_optimizer: Optimizer = Optimizer.SGD  # "use simple vanilla SGD"
    overfit_lr: float | None = Field(None, gt=0)  # None: train.lr
    probe_lrs: tuple[float, ...] = (1e-1, 1e-2, 1e-3, 1e-4)  # "good learning rates to try"
    probe_iterations: int = Field(100, ge=2)
    probe_weight_decay: float = Field(1e-4, ge=0)  # "turn on small weight decay"

    @field_validator("probe_lrs")
    @classmethod
    def _positive_lrs(cls, v: tuple[float, ...]) -> tuple[float, ...]:
        if not v:
            raise spec_error("", "must list at least one learning rate", v)
        for i, lr in enumerate(v):
            if not (lr > 0 and math.isfinite(lr)):
                raise spec_error(str(i), "must be a positive number", lr)
        return v


class RefineSpec(_Strict):
    """Settings of `hpsearch refine` (the lecture's step 5: "refine grid, train longer")."""

    top_k: int = Field(5, ge=1)  # the best complete trials the new ranges are planned around
    trials: int | None = Field(None, ge=1)  # None: as many as the previous stage
    epochs_factor: float = Field(3.0, ge=1)  # train this many times longer than the previous stage
    lr_decay: float = Field(1.0, gt=0, le=1)  # "without learning rate decay" unless set here
    # random: the lecture's random search in the narrowed ranges. tpe: the model kept: TPE in the
    # narrowed ranges, told every earlier trial inside them (at their shorter budget), from the
    # stage's second trial on (its first is random search's).
    sampler: Sampler = Sampler.RANDOM


class ResourcesSpec(_Strict):
    """What one trial or population asks of a Ray cluster (`--executor ray`)."""

    num_cpus: float = Field(1.0, gt=0)  # also the torch threads of the task
    num_gpus: float = Field(0.0, ge=0)
    max_retries: int = Field(2, ge=0)  # runs again after its worker process died, at most this often


class NumericRange(_Strict):
    low: float
    high: float
    log: bool = False
    integer: bool | None = None  # a factory argument's range: whole numbers (default: when low and high are)
    points: int | None = Field(None, ge=1)  # grid sampler only: values along this axis (below 3 only if set)

    @model_validator(mode="after")
    def _check(self) -> NumericRange:
        for key in ("low", "high"):
            if not math.isfinite(getattr(self, key)):
                raise spec_error(key, "must be a finite number", getattr(self, key))
        if self.log and self.low <= 0:
            raise spec_error("low", "must be > 0 when log is true", number(self.low))
        if self.low >= self.high:
            raise spec_error("high", f"must be > low ({number(self.low)})", number(self.high))
        return self


class Categorical(_Strict):
    values: tuple[Any, ...]

    @field_validator("values", mode="before")
    @classmethod
    def _values_list(cls, v: Any) -> Any:
        if not isinstance(v, (list, tuple)) or not v:
            raise spec_error("", "must be a non-empty list of values", v)
        return tuple(tuple(x) if isinstance(x, list) else x for x in v)


def _space_kind(body: Any) -> str | None:
    if isinstance(body, dict):
        return "categorical" if "values" in body else "numeric-range"
    return "categorical" if isinstance(body, Categorical) else "numeric-range"


ParamSpace = Annotated[
    Union[Annotated[NumericRange, Tag("numeric-range")], Annotated[Categorical, Tag("categorical")]],
    Discriminator(_space_kind),
]

# Fields a search may override, with the spec section that owns each.
SEARCHABLE: dict[str, str] = {name: "train" for name in TrainSpec.model_fields if name != "device"}
SEARCHABLE.update({name: "model" for name in ModelSpec.model_fields})


class HalvingSpec(_Strict):
    """Successive halving inside a stage (synchronous rungs): every trial trains `min_epochs`, the
    best 1/eta of them go on to eta times as many epochs, and so on up to train.epochs. A fraction
    (0.25) counts the rungs in iterations, as Hyperband and ASHA count their resource: rung r ends
    after round(min_epochs * eta^r * steps per epoch) steps, which may fall inside an epoch."""

    eta: int = Field(3, ge=2)  # keep the best 1/eta of a rung; the next rung trains eta x the epochs
    min_epochs: float = Field(1, gt=0)  # the first rung's epochs: whole (an int), or a fraction

    @field_validator("min_epochs")
    @classmethod
    def _whole_is_int(cls, v: float) -> float:
        # 2.0 is 2: whole-number rungs train, and print, exactly as an int's do.
        if isinstance(v, float) and not math.isfinite(v):
            raise spec_error("", "must be a finite number of epochs", v)
        return int(v) if float(v).is_integer() else v


class MedianStopSpec(_Strict):
    """Early stopping trial by trial, as each trains (the median stopping rule of Google Vizier;
    Optuna's MedianPruner): after each epoch past `warmup_epochs`, a trial whose best validation
    accuracy so far is below the median of the complete trials' accuracies at that epoch stops
    (STOPPED), once `startup_trials` trials have completed. No rungs: nothing waits for others."""

    startup_trials: int = Field(5, ge=1)  # complete trials needed before any trial is stopped
    warmup_epochs: int = Field(1, ge=0)  # no trial is stopped at its first warmup_epochs epochs


class TpeSpec(_Strict):
    """sampler: tpe. The first `startup_trials` are random search's trials (the same values, drawn
    from the seed and trial id); after them trials are proposed `wave` at a time by a TPE model told
    every finished trial, and each wave trains together (as populations where shapes allow)."""

    startup_trials: int = Field(10, ge=1)  # Optuna's n_startup_trials default
    wave: int = Field(4, ge=1)  # proposals asked at once (the pending ones told by a constant liar)
    # Each wave's trials after its first take the first's values of the parameters that decide a
    # population (hidden layers, activation, batch size, ...), TPE proposing the rest: a wave trains as
    # one population even on a space of many shapes.
    same_shape: bool = False


class SearchSpec(_Strict):
    trials: int = Field(20, ge=1)
    sampler: Sampler = Sampler.RANDOM
    seed: int = Field(0, ge=0)
    space: dict[str, ParamSpace] = Field(default_factory=dict)
    halving: HalvingSpec | None = None  # None: every trial trains train.epochs
    tpe: TpeSpec | None = None  # sampler: tpe's settings; None: the defaults
    median_stop: MedianStopSpec | None = None  # None: no trial is stopped early by the median rule

    @property
    def tpe_settings(self) -> TpeSpec:
        return self.tpe or TpeSpec()

    @property
    def proposed(self) -> bool:
        """Trials proposed as others finish (sampler: tpe), not all planned up front."""
        return self.sampler is Sampler.TPE

    @field_validator("space", mode="before")
    @classmethod
    def _space_shape(cls, v: Any) -> Any:
        if not isinstance(v, dict):
            return v
        for name, body in v.items():
            if not isinstance(name, str) or not name.isidentifier():
                raise spec_error(str(name), f"not a searchable parameter{did_you_mean(name, SEARCHABLE)}", name)
            if not isinstance(body, dict) or not ({"values"} <= body.keys() or {"low", "high"} <= body.keys()):
                raise spec_error(str(name), "must be {low, high, log} or {values: [...]}", body)
            if "values" in body and body.keys() & {"low", "high", "log", "points"}:
                raise spec_error(str(name), "give either {low, high, log} or {values: [...]}, not both", body)
        return v


NAME_CHARS = 100  # a spec's name names its run directory; file systems allow 255 bytes


class Spec(_Strict):
    """A spec, validated and frozen: what load_spec reads from a YAML file, or built in code with
    Spec(name=..., data={...}, search={...}) or Spec.model_validate(a dict shaped like the file)."""

    name: str = Field(min_length=1)
    data: DataSpec = Field(default_factory=DataSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    search: SearchSpec = Field(default_factory=SearchSpec)
    sanity: SanitySpec = Field(default_factory=SanitySpec)
    refine: RefineSpec = Field(default_factory=RefineSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        # The name becomes a directory: runs/<name>.
        if "/" in v or "\\" in v or v.startswith("."):
            raise spec_error("", "must be a plain name (no '/' or '\\', not starting with '.')", v)
        if len(v) > NAME_CHARS:
            raise spec_error("", f"must be at most {NAME_CHARS} characters (it names the run directory)", v)
        if any(unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") for c in v):
            raise spec_error("", "must not hold control, line-break, invisible or bidi characters", v)
        return v

    @field_validator("search")
    @classmethod
    def _space_values_fit_fields(cls, search: SearchSpec, info: ValidationInfo) -> SearchSpec:
        """Each searched value checked and coerced as its field (or factory argument) takes it: the
        search section validated last, after the model and train sections it depends on."""
        model, train = info.data.get("model"), info.data.get("train")
        if model is None or train is None:
            return search  # their own errors are the ones reported
        space = {name: _checked_domain(name, dom, model, train) for name, dom in search.space.items()}
        return search.model_copy(update={"space": space})

    @model_validator(mode="after")
    def _search_fits_train(self) -> Spec:
        self._check_sampler()
        self._check_halving()
        self._check_median_stop()
        return self

    def _check_sampler(self) -> None:
        search = self.search
        if search.tpe is not None and search.sampler is not Sampler.TPE:
            message = f"applies to sampler: tpe only (this search's sampler is {search.sampler.value})"
            raise spec_error("search.tpe", message, search.tpe.model_dump())

    def _check_halving(self) -> None:
        halving = self.search.halving
        if halving is None:
            return
        if "epochs" in self.search.space:
            message = "cannot be searched with search.halving: halving decides each trial's epochs"
            raise spec_error("search.space.epochs", message, "epochs")
        if halving.min_epochs >= self.train.epochs:
            raise spec_error(
                "search.halving.min_epochs",
                f"must be below train.epochs ({self.train.epochs}): the first rung must stop before the last",
                halving.min_epochs,
            )

    def _check_median_stop(self) -> None:
        rule = self.search.median_stop
        if rule is None:
            return
        if self.search.halving is not None:
            message = "give search.median_stop or search.halving, not both: each decides which trials stop early"
            raise spec_error("search.median_stop", message, rule.model_dump())
        if rule.warmup_epochs >= self.train.epochs - 1:
            raise spec_error(
                "search.median_stop.warmup_epochs",
                f"must be below train.epochs - 1 ({self.train.epochs - 1}): a trial is judged after an epoch "
                "past the warm-up and before its last",
                rule.warmup_epochs,
            )

    def is_factory_arg(self, name: str) -> bool:
        """With a python model every searched name but a train field is the factory's argument
        (the built-in nets' model fields, hidden or activation, mean nothing to it)."""
        return _is_factory_arg(self.model, name)

    def resolved(self, params: dict[str, Any]) -> Spec:
        """This spec with `params` overriding the fixed train/model fields and the factory's
        arguments (a trial's spec)."""
        train = {k: v for k, v in params.items() if SEARCHABLE.get(k) == "train"}
        args = {k: v for k, v in params.items() if self.is_factory_arg(k)}
        model = {k: v for k, v in params.items() if SEARCHABLE.get(k) == "model" and k not in args}
        if args:
            model["args"] = {**self.model.args, **args}
        return self.model_copy(
            update={
                "train": TrainSpec.model_validate({**self.train.model_dump(), **train}),
                "model": ModelSpec.model_validate({**self.model.model_dump(), **model}),
            }
        )


def _is_factory_arg(model: ModelSpec, name: str) -> bool:
    return model.kind == "python" and SEARCHABLE.get(name) != "train"


def _checked_domain(name: str, dom: ParamSpace, model: ModelSpec, train: TrainSpec) -> ParamSpace:
    """A searched entry as the trials take it: a factory argument's range resolved to integers or
    not; a field's values coerced by the field and its range's bounds checked against it."""
    where = f"space.{name}"  # raised while the search section validates, which prefixes "search."
    if _is_factory_arg(model, name):
        return dom if isinstance(dom, Categorical) else _integer_resolved(dom)
    if name not in SEARCHABLE:
        raise spec_error(where, f"not a searchable parameter{did_you_mean(name, SEARCHABLE)}", name)
    if isinstance(dom, Categorical):
        values = tuple(_coerce(name, v, f"{where}.values.{i}", model, train) for i, v in enumerate(dom.values))
        return Categorical(values=values)
    if _field_type(name) not in (int, float):
        raise spec_error(where, "is not numeric: give {values: [...]} instead", name)
    for key in ("low", "high"):
        v = getattr(dom, key)
        if is_int_param(name) and v != int(v):
            raise spec_error(f"{where}.{key}", f"{name} is an integer", number(v))
        _coerce(name, int(v) if is_int_param(name) else v, f"{where}.{key}", model, train)
    return dom


def _coerce(name: str, value: Any, key: str, model: ModelSpec, train: TrainSpec) -> Any:
    """`value` as the field `name` of train or model takes it (a one-line error where it does not)."""
    owner: TrainSpec | ModelSpec = train if SEARCHABLE[name] == "train" else model
    try:
        checked = type(owner).model_validate({**owner.model_dump(), name: value})
    except ValidationError as e:
        raise spec_error(key, message(e.errors()[0]), value) from None
    return getattr(checked, name)


def is_int_param(name: str, dom: NumericRange | None = None) -> bool:
    """Whether a searched parameter takes whole numbers: its field's type, or for a factory
    argument its range's `integer`."""
    if dom is not None and dom.integer is not None:  # a factory argument: set when the spec is read
        return dom.integer
    return name in SEARCHABLE and _field_type(name) is int


def is_factory_file(where: str) -> bool:
    """'nets.py' or 'models/nets.py' name a file; 'package.module' names an importable module."""
    return where.endswith(".py") or "/" in where or "\\" in where


def _integer_resolved(dom: NumericRange) -> NumericRange:
    if dom.integer is not None:
        return dom
    whole = float(dom.low).is_integer() and float(dom.high).is_integer()
    return dom.model_copy(update={"integer": whole})


def _field_type(name: str) -> Any:
    section = TrainSpec if SEARCHABLE[name] == "train" else ModelSpec
    return section.model_fields[name].annotation

"""YAML spec -> typed, frozen spec objects. Every validation message names file, key and value.
May import: errors; pydantic, yaml."""

from __future__ import annotations

import difflib
import enum
import math
import reprlib
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal, NamedTuple, Union

import yaml
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

from hpsearch.errors import SpecError


class Activation(str, enum.Enum):
    RELU = "relu"
    LEAKY_RELU = "leaky_relu"
    PRELU = "prelu"
    ELU = "elu"
    SELU = "selu"
    GELU = "gelu"
    TANH = "tanh"
    SIGMOID = "sigmoid"
    MAXOUT = "maxout"


class Init(str, enum.Enum):
    SMALL_RANDOM = "small_random"  # N(0, init_std^2), the lecture's 0.01 * randn
    XAVIER = "xavier"  # N(0, 1/fan_in)
    KAIMING = "kaiming"  # N(0, 2/fan_in)


class Optimizer(str, enum.Enum):
    SGD = "sgd"
    MOMENTUM = "momentum"
    NESTEROV = "nesterov"
    ADAM = "adam"


class Preprocess(str, enum.Enum):
    NONE = "none"
    MEAN_IMAGE = "mean_image"
    PER_CHANNEL_MEAN = "per_channel_mean"
    PER_CHANNEL_STANDARDIZE = "per_channel_standardize"


class Sampler(str, enum.Enum):
    RANDOM = "random"
    GRID = "grid"
    TPE = "tpe"  # Optuna's TPE through ask-and-tell (hpsearch.proposals): needs the tpe extra


def spec_error(key: str, message: str, value: Any) -> PydanticCustomError:
    """An error raised inside a validator that names a key below the validated object."""
    # The value goes in as bounded text: pydantic renders every context entry with str(), which
    # never ends for a YAML alias bomb (a few lines nesting billions of elements).
    return PydanticCustomError("hpsearch", message, {"key": key, "shown": _short(value)})


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
            raise spec_error("low", "must be > 0 when log is true", _num(self.low))
        if self.low >= self.high:
            raise spec_error("high", f"must be > low ({_num(self.low)})", _num(self.high))
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
    best 1/eta of them go on to eta times as many epochs, and so on up to train.epochs."""

    eta: int = Field(3, ge=2)  # keep the best 1/eta of a rung; the next rung trains eta x the epochs
    min_epochs: int = Field(1, ge=1)  # the first rung's epochs


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
                raise spec_error(str(name), f"not a searchable parameter{_did_you_mean(name, SEARCHABLE)}", name)
            if not isinstance(body, dict) or not ({"values"} <= body.keys() or {"low", "high"} <= body.keys()):
                raise spec_error(str(name), "must be {low, high, log} or {values: [...]}", body)
            if "values" in body and body.keys() & {"low", "high", "log", "points"}:
                raise spec_error(str(name), "give either {low, high, log} or {values: [...]}, not both", body)
        return v


NAME_CHARS = 100  # a spec's name names its run directory; file systems allow 255 bytes


class Spec(_Strict):
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

    @model_validator(mode="after")
    def _space_values_fit_fields(self) -> Spec:
        space: dict[str, NumericRange | Categorical] = {}
        for name, dom in self.search.space.items():
            where = f"search.space.{name}"
            if self.is_factory_arg(name):
                space[name] = dom if isinstance(dom, Categorical) else _integer_resolved(dom)
                continue
            if name not in SEARCHABLE:
                raise spec_error(where, f"not a searchable parameter{_did_you_mean(name, SEARCHABLE)}", name)
            if isinstance(dom, Categorical):
                values = tuple(self._coerce(name, v, f"{where}.values.{i}") for i, v in enumerate(dom.values))
                space[name] = Categorical(values=values)
            else:
                space[name] = self._check_range(name, dom, where)
        # Frozen models: the coerced values replace the raw ones once, here, at construction.
        object.__setattr__(self.search, "space", space)
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

    def _coerce(self, name: str, value: Any, key: str) -> Any:
        owner = self.train if SEARCHABLE[name] == "train" else self.model
        try:
            checked = type(owner).model_validate({**owner.model_dump(), name: value})
        except ValidationError as e:
            raise spec_error(key, _message(e.errors()[0]), value) from None
        return getattr(checked, name)

    def _check_range(self, name: str, dom: NumericRange, where: str) -> NumericRange:
        if _field_type(name) not in (int, float):
            raise spec_error(where, "is not numeric: give {values: [...]} instead", name)
        for key in ("low", "high"):
            v = getattr(dom, key)
            if is_int_param(name) and v != int(v):
                raise spec_error(f"{where}.{key}", f"{name} is an integer", _num(v))
            self._coerce(name, int(v) if is_int_param(name) else v, f"{where}.{key}")
        return dom

    def is_factory_arg(self, name: str) -> bool:
        """With a python model every searched name but a train field is the factory's argument
        (the built-in nets' model fields, hidden or activation, mean nothing to it)."""
        return self.model.kind == "python" and SEARCHABLE.get(name) != "train"

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


def with_overrides(spec: Spec, trials: int | None = None, epochs: int | None = None, seed: int | None = None) -> Spec:
    """The spec with command-line overrides applied, validated like the file."""
    data = spec.model_dump()
    if trials is not None:
        data["search"]["trials"] = trials
    if seed is not None:
        data["search"]["seed"] = seed
    if epochs is not None:
        data["train"]["epochs"] = epochs
        data["search"]["space"].pop("epochs", None)  # --epochs fixes them, as it does for refine
    try:
        return Spec.model_validate(data)
    except ValidationError as e:  # one line naming the option, as a bad value in the file is
        given = {"--trials": trials, "--epochs": epochs, "--seed": seed}
        options = " ".join(f"{k} {v}" for k, v in given.items() if v is not None)
        raise SpecError(_format_error(options, e.errors()[0])) from None


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


def _num(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v


def _did_you_mean(word: Any, choices: Any) -> str:
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _message(err: Any) -> str:
    if err["type"] == "hpsearch":
        return str(err["msg"])
    msg = str(err["msg"])
    msg = msg.removeprefix("Value error, ")
    return msg[:1].lower() + msg[1:]


def _format_error(path: str, err: Any) -> str:
    loc = [str(p) for p in err["loc"] if p not in ("numeric-range", "categorical")]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    shown = None
    if err["type"] == "hpsearch":
        if ctx.get("key"):
            loc.append(str(ctx["key"]))
        shown = ctx.get("shown")
    if err["type"] == "extra_forbidden":
        parent = _model_at(loc[:-1])
        hint = _did_you_mean(loc[-1], parent.model_fields) if parent else ""
        return f"{path}: {'.'.join(loc)}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{path}: {'.'.join(loc)}: required key is missing"
    if err["type"] == "enum":
        return f"{path}: {'.'.join(loc)}: must be one of {err['ctx']['expected']} (got {_short(value)})"
    key = ".".join(loc) or "(top level)"
    return f"{path}: {key}: {_message(err)} (got {shown if shown is not None else _short(value)})"


# Bounded, unlike repr(): a few lines of YAML aliases nest billions of elements whose full repr never ends.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple = 3, 4, 8, 8
_REPR.maxstring = _REPR.maxlong = _REPR.maxother = 60


def _short(value: Any) -> str:
    text = _REPR.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _model_at(loc: list[str]) -> type[BaseModel] | None:
    if loc[:2] == ["search", "space"] and len(loc) == 3:
        return NumericRange
    model: type[BaseModel] = Spec
    for part in loc:
        field = model.model_fields.get(part)
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return None
        model = field.annotation
    return model


def parse_spec(data: Any, path: str = "<spec>", base: Path | None = None) -> Spec:
    """Validate already-parsed YAML into a Spec, or raise SpecError naming path, key and value.
    Relative data and factory paths are relative to `base` (the spec file's folder)."""
    if data is None:
        raise SpecError(f"{path}: the spec is empty")
    if not isinstance(data, dict):
        raise SpecError(f"{path}: the spec must be a mapping of keys to values (got {type(data).__name__})")
    try:
        return Spec.model_validate(data, context={"base": base} if base is not None else None)
    except ValidationError as e:
        raise SpecError(_format_error(path, e.errors()[0])) from None


_INT_LIMIT = 2**63 - 1  # no count, size or seed needs more, and torch and numpy take no more
_INT_CHARS = 100  # longer integer literals are out of range (int64 in binary with '_' every 4 digits: 82)


class _SafeSpecLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, plus: a scalar Python cannot hold (a date like 2001-13-45, an integer
    beyond 64 bits) is a YAML error at its line and column instead of a ValueError from inside PyYAML."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except ValueError as e:
            raise yaml.constructor.ConstructorError(None, None, str(e), node.start_mark) from None

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        # Checked before converting: Python refuses to read a decimal integer of over 4300 digits.
        value = super().construct_yaml_int(node) if len(str(node.value)) <= _INT_CHARS else None
        if value is None or abs(value) > _INT_LIMIT:
            raise ValueError("integer out of range (more than 64 bits)")
        return value


_SafeSpecLoader.add_constructor("tag:yaml.org,2002:int", _SafeSpecLoader.construct_yaml_int)


def load_spec(path: str | Path) -> Spec:
    """Read a YAML spec with a yaml.safe_load loader and validate it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise SpecError(f"{p}: is a directory, not a spec file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    return parse_spec_text(text, p)


def parse_spec_text(text: str, path: Path) -> Spec:
    """A spec's YAML text, as the file at `path` would be read (relative paths from its folder)."""
    loader = _SafeSpecLoader(text)  # a SafeLoader: plain data, no Python objects
    try:
        # yaml.load's two steps, with the node tree checked between them: once constructed, a key
        # given twice has already lost its first value.
        root = loader.get_single_node()
        _refuse_duplicate_keys(root, path)
        data = loader.construct_document(root) if root is not None else None
    except RecursionError:  # PyYAML's parser recurses once per level of nesting
        raise SpecError(f"{path}: invalid YAML: nested too deeply") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise SpecError(f"{path}: invalid YAML{where}: {problem}") from None
    finally:
        loader.dispose()
    return parse_spec(data, str(path), path.resolve().parent)


def _refuse_duplicate_keys(root: yaml.Node | None, path: Path) -> None:
    """A SpecError naming the first key given twice in one mapping (PyYAML keeps the last value
    silently), with its place in the spec and both lines. Each node is visited once: an alias
    points at a node already seen, and a few lines of aliases can reach billions of them."""
    seen: set[int] = set()
    todo: list[tuple[yaml.Node, str]] = [(root, "")] if root is not None else []
    while todo:
        node, where = todo.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            todo += [(item, f"{where}.{i}" if where else str(i)) for i, item in reversed(list(enumerate(node.value)))]
        if not isinstance(node, yaml.MappingNode):
            continue
        first: dict[tuple[str, str], yaml.Node] = {}
        children = []
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges a mapping whose keys the file may override: YAML's own rule
            name = f"{where}.{key.value}" if where else str(key.value)
            earlier = first.setdefault((key.tag, key.value), key)
            if earlier is not key:
                raise SpecError(
                    f"{path}: {name}: duplicate key, at lines {earlier.start_mark.line + 1} and "
                    f"{key.start_mark.line + 1} (YAML would keep only the last; give it once)"
                )
            children.append((value, name))
        todo += reversed(children)


def _value_node(node: yaml.Node | None, key: str) -> tuple[yaml.Node, yaml.Node] | None:
    """(key node, value node) of `key` in a YAML mapping node; None if it is not a mapping that has it."""
    if not isinstance(node, yaml.MappingNode):
        return None
    return next(((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)


def _end_index(node: yaml.Node) -> int:
    """Where a node's own text ends: a block collection's end mark lies past any comments after it."""
    if isinstance(node, yaml.CollectionNode) and not node.flow_style and node.value:
        last = node.value[-1]
        return _end_index(last[1] if isinstance(last, tuple) else last)
    return node.end_mark.index


def with_space_entry(text: str, name: str, entry: str) -> str | None:
    """A spec's YAML text with search.space.<name> set to `entry` (one line of flow YAML), every
    other character as written (comments, order, layout); None when the text has no search.space
    mapping to put it in."""
    try:
        root = yaml.compose(text, Loader=_SafeSpecLoader)
    except (yaml.YAMLError, RecursionError):
        return None
    search = _value_node(root, "search")
    space = _value_node(search[1], "space") if search else None
    if space is None or not isinstance(space[1], yaml.MappingNode) or not space[1].value:
        return None
    found = _value_node(space[1], name)
    if found is not None:  # replace the value: from just after the key's colon to the value's end
        colon = text.find(":", found[0].end_mark.index)
        return text[: colon + 1] + " " + entry + text[_end_index(found[1]) :]
    first = space[1].value[0][0]  # insert it before the first entry, as that one is laid out
    at = first.start_mark
    sep = ", " if space[1].flow_style else "\n" + " " * at.column
    return text[: at.index] + f"{name}: {entry}" + sep + text[at.index :]


def rewritten_spec(source: Path, new: Spec, dest: Path, name: str) -> str:
    """The text to write at `dest` for `new`, a copy of the spec file at `source` whose
    search.space.<name> changed: the file as its user wrote it (comments included) with only that
    entry edited, when it then loads as `new` from `dest`; else `new` as written (comments lost)."""
    dom = new.search.space[name]
    fields = dom.model_dump(mode="json", exclude_unset=True)
    entry = yaml.safe_dump(fields, default_flow_style=True, sort_keys=False, width=2**31).strip()
    try:
        edited = with_space_entry(source.read_text(encoding="utf-8"), name, entry)
        if edited is not None and parse_spec_text(edited, dest) == new:
            return edited
    except (OSError, UnicodeDecodeError, SpecError):
        pass
    return spec_to_yaml(new, as_written=True)


def spec_to_yaml(spec: Spec, as_written: bool = False) -> str:
    """The resolved spec as YAML that load_spec reads back to an equal Spec. `as_written`: only the
    keys the spec's file set (the rest are defaults), short collections on one line, as a person
    writes a spec; else every key, defaults included (what a run records it ran)."""
    if as_written:
        return yaml.safe_dump(
            spec.model_dump(mode="json", exclude_unset=True), sort_keys=False, default_flow_style=None, width=110
        )
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)

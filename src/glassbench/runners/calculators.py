"""MLIP calculator factory: one ASE calculator per registered architecture.

torch, TensorFlow, mace, deepmd, tensorpotential, chgnet and sevenn are imported only inside
the per-architecture builders, so importing this module (and so ``glassbench report`` or
``glassbench sql``) stays light. The families cannot share one environment (their torch,
TensorFlow and e3nn pins conflict, see docs/environments.md): each registered MLIP names the
interpreter whose environment holds its package, and the runner calls `make_calculator` there.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from glassbench.errors import BadInput, Failure
from glassbench.hashing import sha256_file

if TYPE_CHECKING:
    from ase.calculators.calculator import Calculator

ARCHITECTURES = ("mace", "deepmd", "grace", "chgnet", "sevenn")

# Pretrained models that ship inside the package wheel (no download needed).
CHGNET_MODELS = ("0.3.0", "r2scan", "0.2.0")
DEFAULT_PRETRAINED = {"chgnet": "0.3.0", "sevenn": "7net-0"}

# Key marking a MACE file saved as {hyperparameters + state_dict} (see `save_mace_portable`):
# it loads with torch.load(weights_only=True) and survives e3nn version changes, which a
# pickled whole model does not.
MACE_PORTABLE_FORMAT = "glassbench-mace-portable-v1"

_EXTRA = {
    "mace": "mace",
    "deepmd": "deepmd",
    "grace": "grace",
    "chgnet": "chgnet",
    "sevenn": "sevenn",
}
_INSTALL_HINT = {
    "grace": (
        "in a separate environment: pip install 'tensorflow-cpu==2.20.*' 'tf_keras==2.20.*' "
        "&& pip install --no-deps tensorpotential (see docs/environments.md)"
    ),
}

# Distributions recorded as provenance per architecture (the ones that change results).
_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "mace": ("mace-torch", "torch", "e3nn"),
    "deepmd": ("deepmd-kit", "tensorflow-cpu", "tensorflow", "torch"),
    "grace": ("tensorpotential", "tensorflow-cpu", "tensorflow", "tf-keras"),
    "chgnet": ("chgnet", "torch"),
    "sevenn": ("sevenn", "torch", "e3nn"),
}
_COMMON_DISTRIBUTIONS = ("ase", "numpy")


def _check_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise BadInput(
            f"unknown architecture {arch!r} (known: {', '.join(ARCHITECTURES)})", where="arch"
        )
    return arch


def check_model_file(path: str | os.PathLike[str], expected_sha256: str | None) -> Path:
    """Check that the model file exists and (if given) still has its registered sha256.

    Raises `BadInput` (exit status 2) naming the file when it is missing or has changed since
    registration. Returns the path. With ``expected_sha256=None`` only existence is checked.
    """
    p = Path(path)
    if not p.exists():
        raise BadInput("model file does not exist", source=str(path), where="model")
    if expected_sha256 is not None:
        actual = sha256_file(p)
        if actual.lower() != expected_sha256.strip().lower():
            raise BadInput(
                f"model file changed since registration: sha256 {actual} != {expected_sha256}",
                source=str(path),
                where="model",
            )
    return p


def package_versions(arch: str) -> dict[str, str]:
    """Installed versions of the distributions that an architecture's results depend on.

    Read from package metadata only (nothing heavy is imported); absent ones are left out.
    """
    out: dict[str, str] = {}
    for dist in (*_DISTRIBUTIONS[_check_arch(arch)], *_COMMON_DISTRIBUTIONS):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return out


def _missing(arch: str, err: ImportError) -> Failure:
    hint = _INSTALL_HINT.get(arch, f"pip install 'glassbench[{_EXTRA[arch]}]'")
    return Failure(
        f"architecture {arch!r} needs a package that this interpreter ({sys.executable}) "
        f"cannot import ({err}); install it {hint}, or register the MLIP with --python "
        "pointing at an environment that has it (one environment per model family: "
        "see docs/environments.md)"
    )


def make_calculator(
    arch: str,
    model: str | None,
    *,
    device: str = "cpu",
    expected_sha256: str | None = None,
    default_dtype: str = "float64",
    dispersion: str = "none",
    functional: str | None = None,
) -> Calculator:
    """ASE calculator for a registered MLIP.

    ``model`` is a file (mace, deepmd; a saved-model directory for grace) or the name of a
    pretrained model shipped in the package (chgnet: ``0.3.0`` default or ``r2scan``; sevenn:
    ``7net-0`` default). For files, ``expected_sha256`` (the hash recorded at registration)
    is verified before anything is deserialised; ``None`` skips that check, meaning the caller
    vouches for the file. ``default_dtype`` applies to MACE (CHGNet and SevenNet run in their
    own precision).

    ``dispersion="d3"`` adds Grimme D3(BJ) with the parameters of ``functional`` (the
    functional of the MLIP's training data) to energy, forces and stress; ``"none"`` returns
    the MLIP's calculator itself (see `glassbench.runners.dispersion`, docs/dispersion.md).
    Both are checked before the model is loaded.

    Raises `BadInput` for an unknown architecture, a missing or changed model file, an
    unknown pretrained name, an unknown dispersion, or D3 without a known functional, and
    `Failure` when the architecture's package (or dftd3, for D3) is not importable in this
    interpreter (with the install hint).
    """
    from glassbench.runners.dispersion import check_dispersion, with_dispersion

    builders: dict[str, Callable[..., Calculator]] = {
        "mace": _make_mace,
        "deepmd": _make_deepmd,
        "grace": _make_grace,
        "chgnet": _make_chgnet,
        "sevenn": _make_sevenn,
    }
    _check_arch(arch)
    # A bad dispersion setting fails fast, before a model is read from disk.
    check_dispersion(dispersion, functional)
    if arch in DEFAULT_PRETRAINED:
        calc = builders[arch](model or DEFAULT_PRETRAINED[arch], device=device)
    else:
        if model is None:
            raise BadInput(f"architecture {arch!r} needs a model file", where="model")
        path = check_model_file(model, expected_sha256)
        calc = builders[arch](path, device=device, default_dtype=default_dtype)
    return with_dispersion(calc, dispersion, functional)


@contextmanager
def _mace_import_guard() -> Iterator[None]:
    """Import e3nn/mace without leaving torch.load weakened for the whole process.

    e3nn 0.4.4 loads its constants with torch.load at import time; torch >= 2.6 refuses the
    `slice` global in them unless it is allow-listed. mace's __init__ also sets
    TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 process-wide; it is restored afterwards so other
    torch.load calls in this process keep their safe default.
    """
    import torch

    torch.serialization.add_safe_globals([slice])
    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = before


def _import_mace() -> tuple[Any, Any]:
    try:
        with _mace_import_guard():
            # e3nn.o3 (not bare e3nn) is what loads the constants: import it before mace
            # sets TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD, so they load with weights_only=True.
            import e3nn.o3  # noqa: F401
            from mace.calculators import MACECalculator
            from mace.modules import models as mace_models
    except ImportError as err:
        raise _missing("mace", err) from err
    return MACECalculator, mace_models


def load_mace_model(path: Path, *, default_dtype: str = "float64") -> Any:
    """Load a MACE model file: a pickled whole model, or a portable {hyperparameters,
    state_dict} file written by `save_mace_portable`.

    Only call after `check_model_file`: the whole-model format is a pickle
    (torch.load(weights_only=False) executes code from the file).
    """
    import torch

    _, mace_models = _import_mace()
    try:
        # The portable format holds only tensors and plain containers, so it loads safely.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        obj = None
    if isinstance(obj, dict) and obj.get("format") == MACE_PORTABLE_FORMAT:
        return _rebuild_mace(obj, mace_models, default_dtype)
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise BadInput(f"not a loadable MACE model ({err})", source=str(path)) from err


def _mace_kwargs(hyper: dict[str, Any]) -> dict[str, Any]:
    """Constructor arguments from the portable, JSON-like hyperparameters."""
    import numpy as np
    import torch
    from e3nn import o3
    from mace.modules import interaction_classes

    kw = dict(hyper["kwargs"])
    kw["interaction_cls"] = interaction_classes[kw["interaction_cls"]]
    kw["interaction_cls_first"] = interaction_classes[kw["interaction_cls_first"]]
    kw["hidden_irreps"] = o3.Irreps(kw["hidden_irreps"])
    kw["MLP_irreps"] = o3.Irreps(kw["MLP_irreps"])
    kw["atomic_energies"] = np.asarray(kw["atomic_energies"], dtype=float)
    gates = {"silu": torch.nn.functional.silu, "tanh": torch.tanh, None: None}
    kw["gate"] = gates[kw["gate"]]
    return kw


def _rebuild_mace(obj: dict[str, Any], mace_models: Any, default_dtype: str) -> Any:
    import torch

    dtype = {"float64": torch.float64, "float32": torch.float32}[default_dtype]
    cls = getattr(mace_models, obj["hyperparameters"]["class"])
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        model = cls(**_mace_kwargs(obj["hyperparameters"]))
    finally:
        torch.set_default_dtype(previous)
    model.load_state_dict(obj["state_dict"])
    return model.to(dtype)


def save_mace_portable(model: Any, hyperparameters: dict[str, Any], path: Path) -> Path:
    """Save a MACE model as {hyperparameters + state_dict} (`load_mace_model` reads it).

    ``hyperparameters``: {"class": "ScaleShiftMACE", "kwargs": {...}} with the constructor
    arguments as plain values (interaction classes, irreps and gate by name).
    """
    import torch

    torch.save(
        {
            "format": MACE_PORTABLE_FORMAT,
            "hyperparameters": hyperparameters,
            "state_dict": model.state_dict(),
        },
        path,
    )
    return path


def _make_mace(path: Path, *, device: str, default_dtype: str) -> Calculator:
    if default_dtype not in ("float64", "float32"):
        raise BadInput(f"default_dtype must be float64 or float32, not {default_dtype!r}")
    mace_calculator, _ = _import_mace()
    model = load_mace_model(path, default_dtype=default_dtype)
    calc: Calculator = mace_calculator(models=model, device=device, default_dtype=default_dtype)
    return calc


def _make_deepmd(path: Path, *, device: str, default_dtype: str) -> Calculator:
    del device, default_dtype  # deepmd picks its device itself and runs the frozen precision
    try:
        from deepmd.calculator import DP
    except ImportError as err:
        raise _missing("deepmd", err) from err
    try:
        calc: Calculator = DP(model=str(path))
    except Exception as err:
        raise Failure(f"deepmd could not load {path}: {type(err).__name__}: {err}") from err
    return calc


def _make_grace(path: Path, *, device: str, default_dtype: str) -> Calculator:
    del device, default_dtype  # TensorFlow places the model; the saved model fixes the dtype
    try:
        # tensorpotential first: it sets TF_USE_LEGACY_KERAS before TensorFlow loads.
        import tensorpotential  # noqa: F401
        from tensorpotential.calculator.asecalculator import TPCalculator
    except ImportError as err:
        raise _missing("grace", err) from err
    try:
        calc: Calculator = TPCalculator(model=str(path))
    except Exception as err:
        raise Failure(f"GRACE could not load {path}: {type(err).__name__}: {err}") from err
    return calc


def _make_chgnet(name: str, *, device: str) -> Calculator:
    if name not in CHGNET_MODELS:
        raise BadInput(
            f"unknown CHGNet model {name!r} (shipped: {', '.join(CHGNET_MODELS)})", where="model"
        )
    try:
        from chgnet.model.dynamics import CHGNetCalculator
        from chgnet.model.model import CHGNet
    except ImportError as err:
        raise _missing("chgnet", err) from err
    # Harmless and printed on every run: CHGNet hands each structure to pymatgen, which warns
    # that it drops the FixCom constraint (ASE's integrator still applies it), and its stress
    # path converts a tensor that requires grad.
    warnings.filterwarnings("ignore", "Only FixAtoms and FixCartesian", UserWarning)
    warnings.filterwarnings("ignore", "Converting a tensor with requires_grad", UserWarning)
    model = CHGNet.load(model_name=name, use_device=device, verbose=False)
    calc: Calculator = CHGNetCalculator(model=model, use_device=device)
    return calc


def _make_sevenn(name: str, *, device: str) -> Calculator:
    try:
        from sevenn.calculator import SevenNetCalculator
    except ImportError as err:
        raise _missing("sevenn", err) from err
    try:
        calc: Calculator = SevenNetCalculator(model=name, device=device)
    except Exception as err:
        raise BadInput(f"SevenNet could not load model {name!r}: {err}", where="model") from err
    return calc

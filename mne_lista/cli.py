"""The ``mne-lista`` command line.

Subcommands::

    mne-lista demo   [--out DIR] [--quick]
    mne-lista fit    FORWARD COV EVOKED_OR_INFO -o MODEL [--method mxne] [options]
    mne-lista apply  MODEL FORWARD COV DATA --alpha A -o OUT_PREFIX [options]
    mne-lista bench  NAME [--out FILE] [--quick] [benchmark options]
    mne-lista pipeline --config CONFIG.py [--method mxne] [--alpha 40|sure] [options]

Errors in the input (missing, unreadable or mismatched files, bad options)
end the command with a one-line message on stderr and a non-zero exit
status; set ``MNE_LISTA_DEBUG=1`` to see the full traceback instead.
"""

import argparse
import inspect
import os
import sys
import time
import warnings
from pathlib import Path

_PROG = "mne-lista"
_FIF = (".fif", ".fif.gz")


class CLIError(Exception):
    """An error of the user's input, reported in one line."""


# ----------------------------------------------------------------------------
# helpers


def _set_verbose(args):
    import mne

    level = "warning" if getattr(args, "quiet", False) else "info"
    if getattr(args, "verbose", False):
        level = "debug"
    mne.set_log_level(level)
    return level


def _check_file(fname, what):
    path = Path(fname)
    if not path.exists():
        raise CLIError(f"{what} file not found: {fname}")
    if path.is_dir():
        raise CLIError(f"{what} must be a file, got a directory: {fname}")
    return path


def _read(func, fname, what, *args, **kwargs):
    """Read a file with an MNE reader; any failure becomes a one-line CLIError.

    MNE's warnings and prints of a failed read (e.g. "Invalid tag ..." of a
    truncated file) are folded into that line; those of a successful read
    are logged, one line each.
    """
    import contextlib
    import io

    from mne.utils import logger

    path = _check_file(fname, what)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                out = func(path, *args, verbose=False, **kwargs)
        except Exception as exc:
            notes = [str(w.message).strip().splitlines()[0] for w in caught]
            notes = [n for n in notes if n]
            if notes or isinstance(exc, EOFError):
                reason = "the file is truncated or corrupt"
                detail = notes[0] if notes else _one_line(exc)
                raise CLIError(
                    f"could not read the {what} from {fname}: {reason} ({detail})"
                ) from exc
            raise CLIError(
                f"could not read the {what} from {fname}: {_one_line(exc)}"
            ) from exc
    for w in caught:
        msg = str(w.message).strip().splitlines()
        if msg:
            logger.warning(f"{path.name}: {msg[0]}")
    return out


def _one_line(exc):
    msg = str(exc).strip().splitlines()
    msg = msg[0] if msg else ""
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def _read_forward(fname):
    import mne

    return _read(mne.read_forward_solution, fname, "forward solution")


def _read_cov(fname):
    import mne

    return _read(mne.read_cov, fname, "noise covariance")


def _select_conditions(evokeds, condition, fname):
    """The evokeds of a condition name or index; the error lists them all."""
    if condition is None:
        return evokeds
    names = [ev.comment for ev in evokeds]
    if condition in names:
        return [evokeds[names.index(condition)]]
    try:
        index = int(condition)
    except ValueError:
        index = None
    if index is not None and -len(evokeds) <= index < len(evokeds):
        return [evokeds[index]]
    available = ", ".join(f"{k}: {name!r}" for k, name in enumerate(names))
    raise CLIError(
        f"condition {condition!r} not found in {fname}; available conditions "
        f"(name or index): {available}"
    )


def _read_evokeds(fname, condition=None, baseline=None):
    import mne

    evokeds = _read(mne.read_evokeds, fname, "evoked data", baseline=baseline)
    evokeds = evokeds if isinstance(evokeds, list) else [evokeds]
    return _select_conditions(evokeds, condition, fname)


def _read_info(fname, condition=None):
    """Info of an evoked (condition) or of any fif with measurement info."""
    import mne

    if condition is not None:
        return _read_evokeds(fname, condition)[0].info
    return _read(mne.io.read_info, fname, "measurement info")


def _read_data(fname, condition=None):
    """Read an evoked or an epochs file -> ('evoked', list) or ('epochs', Epochs)."""
    import mne

    path = _check_file(fname, "data")
    name = path.name.lower()
    looks_epochs = any(name.endswith(e + x) for e in ("-epo", "_epo") for x in _FIF)
    errors = []
    for kind in ("epochs", "evoked") if looks_epochs else ("evoked", "epochs"):
        if kind == "epochs" and condition is not None:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # naming conventions
            try:
                if kind == "evoked":
                    evokeds = _read_evokeds(path, None)
                    if evokeds:
                        return "evoked", _select_conditions(evokeds, condition, fname)
                    errors.append("no evoked data")
                else:
                    return "epochs", mne.read_epochs(path, preload=True, verbose=False)
            except CLIError as exc:
                if "not found in" in str(exc):
                    raise
                errors.append(str(exc))
            except Exception as exc:
                errors.append(_one_line(exc))
    raise CLIError(
        f"{fname} is neither an evoked nor an epochs file that can be read "
        f"({'; '.join(errors)})"
    )


def _parse_loose(value):
    if value == "auto":
        return "auto"
    try:
        loose = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--loose must be 'auto' or a number in [0, 1], got {value!r}"
        ) from None
    if not 0 <= loose <= 1:
        raise argparse.ArgumentTypeError(f"--loose must be in [0, 1], got {value}")
    return loose


def _parse_depth(value):
    if value.lower() == "none":
        return None
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--depth must be a number or 'none', got {value!r}"
        ) from None


def _positive_float(value):
    try:
        val = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not val > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value}")
    return val


def _parse_alpha(value):
    """alpha in [0, 100), as the API (StepLISTA/StepMxNE.apply) accepts."""
    try:
        alpha = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not 0 <= alpha < 100:
        raise argparse.ArgumentTypeError(
            f"--alpha must be in [0, 100) (% of alpha_max), got {value}"
        )
    return alpha


def _parse_tol(value):
    """'auto', 'none' or a relative duality gap in (0, 1)."""
    if value.lower() in ("auto", "none"):
        return value.lower()
    try:
        tol = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--tol must be 'auto', 'none' or a number in (0, 1), got {value!r}"
        ) from None
    if not 0 < tol < 1:
        raise argparse.ArgumentTypeError(f"--tol must be in (0, 1), got {value}")
    return tol


def _parse_baseline(value):
    """'none' -> None; 'START,END' (each a time in s or 'None') -> tuple."""
    if value.strip().lower() == "none":
        return None
    parts = value.split(",")
    if len(parts) != 2:
        raise argparse.ArgumentTypeError(
            f"--baseline must be 'none' or START,END (e.g. None,0), got {value!r}"
        )
    out = []
    for part in parts:
        part = part.strip()
        if part.lower() in ("none", ""):
            out.append(None)
            continue
        try:
            out.append(float(part))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"--baseline ends must be times in s or None, got {part!r}"
            ) from None
    if None not in out and out[0] > out[1]:
        raise argparse.ArgumentTypeError(
            f"--baseline START must not be after END, got {value!r}"
        )
    return tuple(out)


def _format_baseline(baseline):
    if baseline is None:
        return "none"
    return ",".join("None" if b is None else f"{b:g}" for b in baseline)


def _check_device(device):
    """A torch device string; CUDA asked for on a machine without it: CLIError."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise CLIError(f"--device {device!r} is not a torch device: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(
            f"--device {device}: CUDA is not available on this machine "
            "(torch.cuda.is_available() is False); use --device cpu"
        )
    return str(dev)


def _safe_name(name):
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
    return keep.strip("_") or "evoked"


_STC_SUFFIXES = ("-lh.stc", "-rh.stc", "-vl.stc", ".stc", "-stc.h5")


def _existing_outputs(prefixes):
    """Files that saving stcs under these prefixes could overwrite."""
    return [
        f"{p}{s}" for p in prefixes for s in _STC_SUFFIXES if Path(f"{p}{s}").exists()
    ]


def _save_stc(stc, prefix):
    """Save an stc at prefix (in a temporary folder); returns the file names."""
    from mne import VolSourceEstimate

    prefix = str(prefix)
    if hasattr(stc, "magnitude") and stc.data.ndim == 3:  # vector estimates
        stc = stc.magnitude()
    stc.save(prefix, overwrite=True, verbose=False)
    if isinstance(stc, VolSourceEstimate):
        return [prefix + "-vl.stc"]
    if len(getattr(stc, "vertices", ())) == 2:
        return [prefix + "-lh.stc", prefix + "-rh.stc"]
    return [prefix + ".stc"]


class _AtomicOutputs:
    """Write outputs under a hidden temporary folder next to them, then move
    them all in place with os.replace once everything succeeded; on any
    error nothing is left behind."""

    def __init__(self, folder):
        import tempfile

        self.folder = Path(folder)
        self.tmp = Path(tempfile.mkdtemp(prefix=".mne-lista-", dir=self.folder))
        self.written = []

    def __enter__(self):
        return self

    def save_stc(self, stc, name):
        self.written += _save_stc(stc, self.tmp / name)

    def __exit__(self, exc_type, exc, tb):
        import shutil

        try:
            if exc_type is None:
                done = []
                for fname in self.written:
                    dest = self.folder / Path(fname).name
                    os.replace(fname, dest)
                    done.append(str(dest))
                self.written = done
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return False


def _empty_stc(src, n_times, tmin, tstep):
    """The exact (zero) estimate: no active source, as the class of src."""
    import mne
    import numpy as np

    vertices = [np.array([], int) for _ in src]
    data = np.zeros((0, n_times))
    kind = getattr(src, "kind", "surface")
    subject = src[0].get("subject_his_id") if len(src) else None
    if kind == "volume":
        cls = mne.VolSourceEstimate
    elif kind == "mixed":
        cls = mne.MixedSourceEstimate
    else:
        cls = mne.SourceEstimate
    return cls(data, vertices, tmin, tstep, subject=subject)


# ----------------------------------------------------------------------------
# subcommands


def _cmd_demo(args):
    from ._demo import format_demo_table, run_demo

    res = run_demo(
        out_dir=args.out,
        quick=args.quick,
        train=args.train,
        random_state=args.seed,
        alpha=args.alpha,
        verbose=None if not args.quiet else False,
    )
    print(format_demo_table(res))
    if res["figures"]:
        print("Figures written:")
        for fname in res["figures"]:
            print(f"  {fname}")
    return 0


_ESTIMATORS = dict(mxne="StepMxNE", steplista="StepLISTA")


def _cmd_fit(args):
    device = _check_device(args.device)
    if args.plain and args.method != "steplista":
        raise CLIError("--plain applies to --method steplista only")
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CLIError(f"output file exists (use --overwrite): {out}")
    if not out.parent.is_dir():
        raise CLIError(f"output folder does not exist: {out.parent}")
    fwd = _read_forward(args.forward)
    cov = _read_cov(args.cov)
    info = _read_info(args.info, args.condition)
    from . import StepLISTA, StepMxNE

    kwargs = dict(
        n_layers=args.n_layers,
        loose=args.loose,
        depth=args.depth,
        device=device,
        verbose=False,
    )
    try:
        if args.method == "mxne":
            model = StepMxNE(fwd, cov, info, **kwargs)
        else:
            model = StepLISTA(fwd, cov, info, adaptive=not args.plain, **kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CLIError(
            f"the forward, covariance and info do not make a valid problem: "
            f"{_one_line(exc)}"
        ) from exc
    print(f"{model!r}")
    fit_args, fit_kwargs = [], dict(random_state=args.seed)
    if args.n_samples is not None:
        if args.method == "mxne":  # StepMxNE.fit(n_windows, ...)
            fit_args.append(args.n_samples)
        else:
            fit_kwargs["n_samples"] = args.n_samples
    for name in ("n_epochs", "max_time"):
        if getattr(args, name) is not None:
            fit_kwargs[name] = getattr(args, name)
    t0 = time.perf_counter()
    try:
        model.fit(*fit_args, **fit_kwargs)
    except (ValueError, TypeError) as exc:
        raise CLIError(f"training failed: {_one_line(exc)}") from exc
    print(f"Trained in {time.perf_counter() - t0:.1f} s")
    try:  # written atomically (mne_lista._io.atomic_write)
        model.save(out, overwrite=args.overwrite)
    except FileExistsError as exc:  # appeared while training
        raise CLIError(f"output file exists (use --overwrite): {out}") from exc
    print(f"Model ({_ESTIMATORS[args.method]}) written: {out}")
    return 0


def _read_model(fname, forward, noise_cov, info, method=None):
    """Read a model file with the reader its metadata names -> (model, method)."""
    from . import read_step_lista, read_step_mxne
    from ._io import read_model_metadata

    path = _check_file(fname, "model")
    try:
        meta = read_model_metadata(path)
    except (ValueError, OSError) as exc:
        raise CLIError(_one_line(exc)) from exc
    network = meta.get("network")
    found = "mxne" if network in ("StepMxNENet", "StepFISTAMxNENet") else "steplista"
    if method is not None and method != found:
        raise CLIError(
            f"--method {method}: the model {fname} holds a {network} network "
            f"(--method {found}); train one with 'mne-lista fit --method {method}'"
        )
    reader = read_step_mxne if found == "mxne" else read_step_lista
    try:
        model = reader(path, forward, noise_cov, info, verbose=False)
    except Exception as exc:
        raise CLIError(
            f"could not load the model {fname} for this forward/covariance/"
            f"data: {_one_line(exc)}"
        ) from exc
    return model, found


def _prepare(inst, args, what):
    """Baseline (on the whole data, as read_evokeds does), then crop."""
    if args.baseline is not None:
        try:
            inst.apply_baseline(args.baseline, verbose=False)
        except ValueError as exc:
            raise CLIError(
                f"{what}: --baseline {_format_baseline(args.baseline)} is outside "
                f"the data ({inst.times[0]:.3g}..{inst.times[-1]:.3g} s): pass "
                "--baseline none, or START,END within the data"
            ) from exc
    if args.tmin is None and args.tmax is None:
        return inst
    try:
        return inst.crop(args.tmin, args.tmax)
    except ValueError as exc:
        raise CLIError(f"{what}: cannot crop the data: {_one_line(exc)}") from exc


def _check_data(data, problem, what):
    """Channels present and finite values; returns, per item, whether its
    whitened data are zero (then the zero estimate is exact)."""
    import numpy as np

    missing = [c for c in problem.ch_names if c not in data.ch_names]
    if missing:
        raise CLIError(
            f"{what}: {len(missing)} channel(s) of the model are missing, e.g. "
            f"{missing[:5]}"
        )
    picks = [data.ch_names.index(c) for c in problem.ch_names]
    values = data.get_data(picks=picks)  # (n_ch, T) or (n_epochs, n_ch, T)
    values = values if values.ndim == 3 else values[np.newaxis]
    bad = ~np.isfinite(values).all(axis=(1, 2))
    if bad.any():
        k = np.flatnonzero(bad)
        chans = np.flatnonzero(~np.isfinite(values[k[0]]).all(axis=1))
        where = f"epoch(s) {[int(i) for i in k[:10]]}: " if len(values) > 1 else ""
        raise CLIError(
            f"{what}: {where}NaN or infinite values in channel(s) "
            f"{[problem.ch_names[c] for c in chans[:5]]}; nothing was written"
        )
    white = np.matmul(problem.whitener, values)
    scale = np.linalg.norm(problem.whitener, 2) * np.abs(values).max(axis=(1, 2))
    return np.abs(white).max(axis=(1, 2)) <= 1e-12 * scale


def _apply_kwargs(args, method):
    """tol (auto: 1e-4 for MxNE, as mixed_norm; none for Step-LISTA) etc."""
    tol = args.tol
    if tol == "auto":
        tol = 1e-4 if method == "mxne" else None
    elif tol == "none":
        tol = None
    if tol is not None and args.alpha == 0:
        raise CLIError(
            "--alpha 0 has no sparse solution to certify with --tol: pass a "
            "positive --alpha, or --tol none for the network's estimate"
        )
    kwargs = dict(debias=not args.no_debias, tol=tol)
    return kwargs


def _cmd_apply(args):
    if args.device is not None:
        _check_device(args.device)
    prefix = Path(args.output)
    if not prefix.parent.is_dir():
        raise CLIError(f"output folder does not exist: {prefix.parent}")
    _check_file(args.model, "model")
    fwd = _read_forward(args.forward)
    cov = _read_cov(args.cov)
    kind, data = _read_data(args.data, args.condition)
    info = data[0].info if kind == "evoked" else data.info
    model, method = _read_model(args.model, fwd, cov, info, args.method)
    apply_kwargs = _apply_kwargs(args, method)
    if args.device is not None:
        try:
            model.to(args.device)
        except (RuntimeError, ValueError) as exc:
            raise CLIError(_one_line(exc)) from exc
    print(f"{model!r}")
    src = fwd["src"]
    # validate everything before computing or writing anything
    if kind == "evoked":
        names = [ev.comment or str(k) for k, ev in enumerate(data)]
        prefixes = [
            f"{prefix}" if len(data) == 1 else f"{prefix}-{_safe_name(name)}"
            for name in names
        ]
        data = [
            _prepare(ev, args, f"condition {name!r}") for ev, name in zip(data, names)
        ]
        zero = [
            _check_data(ev, model.problem, f"condition {name!r}")[0]
            for ev, name in zip(data, names)
        ]
    else:
        data = _prepare(data, args, "epochs")
        zero = _check_data(data, model.problem, "epochs")
        n_digits = len(str(len(data)))
        prefixes = [f"{prefix}-epo{k:0{n_digits}d}" for k in range(len(data))]
    existing = _existing_outputs(prefixes)
    if existing and not args.overwrite:
        raise CLIError(
            f"{len(existing)} output file(s) exist (use --overwrite), e.g. "
            f"{existing[0]}"
        )
    t0 = time.perf_counter()
    with _AtomicOutputs(prefix.parent) as outputs:
        if kind == "evoked":
            for evoked, name, pre, is_zero in zip(data, names, prefixes, zero):
                if is_zero:
                    stc = _empty_stc(
                        src,
                        len(evoked.times),
                        evoked.times[0],
                        1 / evoked.info["sfreq"],
                    )
                    note = " (zero after whitening: the zero estimate is exact)"
                else:
                    stc = _apply(
                        model.apply,
                        evoked,
                        args.alpha,
                        f"condition {name!r}",
                        **apply_kwargs,
                    )
                    note = ""
                outputs.save_stc(stc, Path(pre).name)
                print(f"  {name!r}: {_n_active(stc)} active source(s){note}")
        else:
            _apply_epochs(model, data, zero, prefixes, src, args, apply_kwargs, outputs)
    written = outputs.written
    print(
        f"Localized in {time.perf_counter() - t0:.2f} s; wrote {len(written)} file(s)"
    )
    for fname in written[:10]:
        print(f"  {fname}")
    if len(written) > 10:
        print(f"  ... ({len(written) - 10} more)")
    return 0


def _apply_epochs(model, epochs, zero, prefixes, src, args, apply_kwargs, outputs):
    import numpy as np

    if args.batch_size is not None:
        apply_kwargs["batch_size"] = args.batch_size
    todo = np.flatnonzero(~zero)
    stcs = iter(())
    if len(todo):
        stcs = _apply(
            model.apply_epochs,
            epochs[todo] if len(todo) < len(epochs) else epochs,
            args.alpha,
            "epochs",
            return_generator=True,
            **apply_kwargs,
        )
    tstep = 1.0 / epochs.info["sfreq"]
    for k, pre in enumerate(prefixes):
        if zero[k]:
            stc = _empty_stc(src, len(epochs.times), epochs.times[0], tstep)
        else:
            try:
                stc = next(stcs)
            except (ValueError, TypeError, RuntimeError) as exc:
                raise CLIError(f"epoch {k}: {_one_line(exc)}") from exc
        outputs.save_stc(stc, Path(pre).name)
    note = (
        f" ({int(zero.sum())} zero after whitening: zero estimate)"
        if zero.any()
        else ""
    )
    print(f"  {len(epochs)} epochs localized{note}")


def _apply(func, inst, alpha, what, **kwargs):
    try:
        return func(inst, alpha, **kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CLIError(f"{what}: {_one_line(exc)}") from exc


def _n_active(stc):
    return sum(len(v) for v in stc.vertices)


def _parse_alpha_or_sure(value):
    return "sure" if value.lower() == "sure" else _parse_alpha(value)


def _cmd_pipeline(args):
    from .pipeline import run_pipeline

    tol = args.tol if args.tol != "none" else None
    try:
        summary = run_pipeline(
            args.config,
            method=args.method,
            alpha=args.alpha,
            tol=tol,
            epochs=args.epochs,
            n_jobs=args.n_jobs,
            dask_scheduler=args.dask_scheduler,
            chunk_size=args.chunk_size,
            device=args.device,
        )
    except (ValueError, FileNotFoundError, ImportError) as exc:
        raise CLIError(_one_line(exc)) from exc
    for name, res in summary["subjects"].items():
        print(f"  {name}: {res['status']:7s} {res.get('message', '')}")
    counts = [s["status"] for s in summary["subjects"].values()]
    print(
        f"{counts.count('done')} done, {counts.count('skipped')} up to date, "
        f"{counts.count('failed')} failed in {summary['time']:.1f} s "
        f"({summary['backend']}, {summary['n_jobs']} worker(s))"
    )
    return 0 if summary["ok"] else 1


_BENCH_ENV = "MNE_LISTA_BENCHMARKS"


def benchmarks_dir():
    """The ``benchmarks/`` folder: ``$MNE_LISTA_BENCHMARKS``, or the one next
    to the package source (a source checkout; an installed wheel has none)."""
    env = os.environ.get(_BENCH_ENV, "")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1] / "benchmarks"  # next to mne_lista/


def available_benchmarks():
    """Names of the benchmark scripts in :func:`benchmarks_dir` (may be none)."""
    folder = benchmarks_dir()
    if not folder.is_dir():
        return []
    return sorted(
        f.stem
        for f in folder.glob("*.py")
        if f.is_file() and not f.stem.startswith("_")
    )


def _load_benchmark(folder, name):
    """Import the script ``folder/name.py`` (its folder first on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        f"_mne_lista_benchmark_{name}", folder / f"{name}.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _cmd_bench(args, extra):
    folder = benchmarks_dir()
    if not folder.is_dir():
        raise CLIError(
            f"no benchmarks folder at {folder}: the benchmarks are not installed "
            "with the package; run 'mne-lista bench' from a source checkout of "
            f"mne-lista, or set {_BENCH_ENV} to its benchmarks/ folder"
        )
    names = available_benchmarks()
    if args.name not in names:
        raise CLIError(
            f"unknown benchmark {args.name!r}; available: "
            f"{', '.join(names) if names else 'none'} (in {folder})"
        )
    argv = list(extra)
    if args.out is not None:
        argv += ["--out", str(args.out)]
    if args.quick:
        argv += ["--quick"]
    old_argv, old_path = sys.argv, list(sys.path)
    sys.argv = [f"{_PROG} bench {args.name}"] + argv
    sys.path.insert(0, str(folder))
    try:
        main = getattr(_load_benchmark(folder, args.name), "main", None)
        if main is None:
            raise CLIError(f"benchmark {args.name!r} has no main()")
        params = inspect.signature(main).parameters
        ret = main(argv) if params else main()
    except SystemExit as exc:  # the benchmark's own argument parser
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old_argv
        sys.path[:] = old_path
    return ret if isinstance(ret, int) else 0


# ----------------------------------------------------------------------------
# parser


def _add_common(p):
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "-q", "--quiet", action="store_true", help="only warnings, no progress bars"
    )
    g.add_argument("-v", "--verbose", action="store_true", help="debug output")


def build_parser():
    """The argparse parser of ``mne-lista``."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog=_PROG,
        description=(
            "Sparse MEG/EEG source localization with learned solvers, for "
            "MNE-Python: StepMxNE (mixed_norm's problem, certified to a "
            "tolerance: the default) and per-sample Step-LISTA, ISTA unrolled "
            "with learned step sizes (Ablin et al., NeurIPS 2019)."
        ),
        epilog=(
            "Run 'mne-lista COMMAND --help' for the options of a command. "
            "Start with 'mne-lista demo'."
        ),
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "demo",
        help="end-to-end demo on a synthetic head (no data, no download)",
        description=(
            "Simulate a few dipoles on a SYNTHETIC head built from what MNE "
            "ships (spherical conductor, Vectorview-like 306-channel MEG "
            "array on MNE's Neuromag helmet surface, volume source grid), "
            "localize with Step-LISTA (its pretrained steps, no training; "
            "--train refines them on the demo head), and compare it, FISTA and "
            "MNE's mixed_norm (wall time, localization error against the "
            "simulated truth). Writes PNG figures to --out."
        ),
    )
    p.add_argument(
        "--out",
        default="mne-lista-demo",
        help="folder for the PNG figures (created; default: %(default)s)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="coarse grid (and with --train, small training): for tests",
    )
    p.add_argument(
        "--train",
        action="store_true",
        help="refine the pretrained steps on the demo head (fit(): minutes)",
    )
    p.add_argument(
        "--alpha",
        type=_positive_float,
        default=None,
        help="regularization in %% of alpha_max, as mixed_norm (default: 30)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    _add_common(p)

    p = sub.add_parser(
        "fit",
        help="train a model (StepMxNE or Step-LISTA) for a forward model -> file",
        description=(
            "Build the problem of FORWARD, COV and the channels of "
            "EVOKED_OR_INFO exactly as mne.inverse_sparse.mixed_norm does, "
            "train the learned solver on simulated sources pushed through it, "
            "and save the model. --method mxne (default): StepMxNE, "
            "mixed_norm's L21 problem (one support per time window), applied "
            "certified to --tol; --method steplista: per-sample Step-LISTA "
            "(one Lasso per time sample)."
        ),
    )
    p.add_argument("forward", metavar="FORWARD", help="forward solution (-fwd.fif)")
    p.add_argument("cov", metavar="COV", help="noise covariance (-cov.fif)")
    p.add_argument(
        "info",
        metavar="EVOKED_OR_INFO",
        help="any fif file with the measurement info (evoked, epochs, raw)",
    )
    p.add_argument("-o", "--output", required=True, metavar="MODEL", help="model file")
    p.add_argument(
        "--method",
        choices=("mxne", "steplista"),
        default="mxne",
        help="mxne: StepMxNE, mixed_norm's problem (default); steplista: "
        "per-sample Step-LISTA",
    )
    p.add_argument(
        "--n-layers", type=int, default=20, help="layers (default: %(default)s)"
    )
    p.add_argument(
        "--loose",
        type=_parse_loose,
        default="auto",
        help="orientation constraint as mixed_norm: 'auto' or 0..1 (default: auto)",
    )
    p.add_argument(
        "--depth",
        type=_parse_depth,
        default=0.8,
        help="depth weighting exponent or 'none' (default: %(default)s)",
    )
    p.add_argument(
        "--plain",
        action="store_true",
        help="with --method steplista: plain Step-LISTA, one learned step per "
        "layer (StepLISTA(adaptive=False)); by default the adaptive network "
        "(per-sample steps with backtracking)",
    )
    p.add_argument(
        "--condition",
        default=None,
        help="condition (name or index) of an evoked file whose info is used",
    )
    p.add_argument(
        "--n-samples",
        type=int,
        default=None,
        help="number of simulated training samples (steplista) or windows "
        "(mxne) (default: that of fit())",
    )
    p.add_argument(
        "--n-epochs",
        type=int,
        default=None,
        help="maximum number of training epochs (default: that of fit())",
    )
    p.add_argument(
        "--max-time",
        type=_positive_float,
        default=None,
        help="training time budget in seconds (result then machine-dependent)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--overwrite", action="store_true", help="overwrite MODEL")
    _add_common(p)

    p = sub.add_parser(
        "apply",
        help="localize evoked or epochs data with a saved model -> stc files",
        description=(
            "Load MODEL (checked against FORWARD and COV; StepMxNE or "
            "Step-LISTA as its file says), localize DATA (an evoked or an "
            "epochs fif file) and write source estimates "
            "OUT_PREFIX[-condition|-epoN]-{lh,rh,vl}.stc. All conditions or "
            "epochs are checked before anything is written, and the files "
            "appear together (written under a temporary name, then renamed)."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="model file written by 'fit'")
    p.add_argument("forward", metavar="FORWARD", help="forward solution (-fwd.fif)")
    p.add_argument("cov", metavar="COV", help="noise covariance (-cov.fif)")
    p.add_argument(
        "data", metavar="DATA", help="evoked (-ave.fif) or epochs (-epo.fif)"
    )
    p.add_argument(
        "--alpha",
        type=_parse_alpha,
        required=True,
        help="regularization in [0, 100), %% of alpha_max over the window, as "
        "mixed_norm",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT_PREFIX", help="output prefix"
    )
    p.add_argument(
        "--method",
        choices=("mxne", "steplista"),
        default=None,
        help="check that MODEL is of this kind (default: whatever MODEL holds)",
    )
    p.add_argument("--condition", default=None, help="evoked condition (name/index)")
    p.add_argument(
        "--baseline",
        type=_parse_baseline,
        default=(None, 0),
        metavar="none|START,END",
        help="baseline correction applied before --tmin/--tmax, in s, 'None' "
        "for an end of the data (default: None,0, i.e. baseline=(None, 0) "
        "as in the tutorials); 'none' for no correction",
    )
    p.add_argument("--tmin", type=float, default=None, help="window start (s)")
    p.add_argument("--tmax", type=float, default=None, help="window end (s)")
    p.add_argument(
        "--tol",
        type=_parse_tol,
        default="auto",
        help="relative duality gap to solve to exactly, or 'none' (the "
        "network alone, approximate). Default 'auto': 1e-4 (mixed_norm's "
        "tol) for mxne models, none for steplista models",
    )
    p.add_argument("--no-debias", action="store_true", help="skip debiasing")
    p.add_argument("--batch-size", type=int, default=None, help="epochs chunk size")
    p.add_argument("--device", default=None, help="torch device (default: model's)")
    p.add_argument("--overwrite", action="store_true", help="overwrite output files")
    _add_common(p)

    p = sub.add_parser(
        "pipeline",
        help="sparse estimates for every subject of an MNE-BIDS-Pipeline study",
        description=(
            "The step after MNE-BIDS-Pipeline: read its config file, and for "
            "every subject fit a model on the forward (or reuse the one saved "
            "next to it), localize every condition and every cleaned epoch, "
            "and write the estimates, a JSON sidecar and the report entries "
            "next to the pipeline's derivatives. Subjects run in parallel on "
            "the config's engine (joblib or Dask); up-to-date subjects are "
            "skipped. The exit status is 0 only if every subject succeeded."
        ),
    )
    p.add_argument("--config", required=True, help="MNE-BIDS-Pipeline config file")
    p.add_argument(
        "--method",
        choices=("mxne", "steplista"),
        default="mxne",
        help="mxne: StepMxNE (default); steplista: per-sample Step-LISTA",
    )
    p.add_argument(
        "--alpha",
        type=_parse_alpha_or_sure,
        default=40.0,
        help="regularization in %% of alpha_max, or 'sure' (default: 40)",
    )
    p.add_argument(
        "--tol",
        type=_parse_tol,
        default="auto",
        help="relative duality gap, 'auto' (1e-4 for mxne, none for steplista) "
        "or 'none'",
    )
    p.add_argument(
        "--epochs",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also localize every cleaned epoch (default: yes)",
    )
    p.add_argument(
        "--n-jobs", type=int, default=None, help="workers (default: the config's)"
    )
    p.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="address of a running Dask scheduler (default: the config's "
        "parallel_backend; 'dask' starts a local cluster)",
    )
    p.add_argument(
        "--chunk-size", type=int, default=100, help="epochs per file and task"
    )
    p.add_argument(
        "--device", default="auto", help="torch device (default: auto, GPU if any)"
    )
    _add_common(p)

    names = available_benchmarks()
    p = sub.add_parser(
        "bench",
        help="run a benchmark (prints a table, writes JSON)",
        description=(
            "Run the benchmark script benchmarks/NAME.py of a source checkout "
            "(or of $MNE_LISTA_BENCHMARKS; an installed wheel has none): it "
            "prints a table and writes its figures as JSON. Available: "
            f"{', '.join(names) if names else 'none (no benchmarks folder)'}. "
            "Options "
            "after NAME that are not listed here go to the benchmark itself "
            "(see 'mne-lista bench NAME -- --help')."
        ),
    )
    p.add_argument("name", metavar="NAME", help=f"one of: {', '.join(names) or 'none'}")
    p.add_argument("--out", default=None, metavar="FILE", help="JSON output file")
    p.add_argument("--quick", action="store_true", help="small, fast version")
    _add_common(p)
    return parser


def main(argv=None):
    """Entry point of the ``mne-lista`` console script."""
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    if extra and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra and extra[0] == "--":
        extra = extra[1:]
    debug = os.environ.get("MNE_LISTA_DEBUG", "") not in ("", "0")
    try:
        _set_verbose(args)
        if args.command == "demo":
            return _cmd_demo(args)
        if args.command == "fit":
            return _cmd_fit(args)
        if args.command == "apply":
            return _cmd_apply(args)
        if args.command == "pipeline":
            return _cmd_pipeline(args)
        return _cmd_bench(args, extra)
    except KeyboardInterrupt:
        print(f"{_PROG}: interrupted", file=sys.stderr)
        return 130
    except CLIError as exc:
        if debug:
            raise
        print(f"{_PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if debug:
            raise
        print(f"{_PROG} {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

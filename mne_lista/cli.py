"""The ``mne-lista`` command line.

Subcommands::

    mne-lista demo   [--out DIR] [--quick]
    mne-lista fit    FORWARD COV EVOKED_OR_INFO -o MODEL [options]
    mne-lista apply  MODEL FORWARD COV DATA --alpha A -o OUT_PREFIX [options]
    mne-lista bench  NAME [--out FILE] [--quick] [benchmark options]

Errors in the input (missing, unreadable or mismatched files, bad options)
end the command with a one-line message on stderr and a non-zero exit
status; set ``MNE_LISTA_DEBUG=1`` to see the full traceback instead.
"""

import argparse
import importlib
import inspect
import os
import pkgutil
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
    """Read a file with an MNE reader; any failure becomes a CLIError."""
    path = _check_file(fname, what)
    try:
        return func(path, *args, verbose=False, **kwargs)
    except Exception as exc:
        raise CLIError(
            f"could not read the {what} from {fname}: {_one_line(exc)}"
        ) from exc


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


def _read_evokeds(fname, condition=None):
    import mne

    cond = condition
    if cond is not None:
        try:
            cond = int(cond)
        except ValueError:
            pass
    evokeds = _read(
        mne.read_evokeds, fname, "evoked data", condition=cond, baseline=None
    )
    return evokeds if isinstance(evokeds, list) else [evokeds]


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
                    evokeds = _read_evokeds(path, condition)
                    if evokeds:
                        return "evoked", evokeds
                    errors.append("no evoked data")
                else:
                    return "epochs", mne.read_epochs(path, preload=True, verbose=False)
            except CLIError as exc:
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


def _safe_name(name):
    keep = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(name))
    return keep.strip("_") or "evoked"


def _save_stc(stc, prefix):
    """Save an stc next to prefix; returns the written file names."""
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


# ----------------------------------------------------------------------------
# subcommands


def _cmd_demo(args):
    from ._demo import format_demo_table, run_demo

    res = run_demo(
        out_dir=args.out,
        quick=args.quick,
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


def _cmd_fit(args):
    fwd = _read_forward(args.forward)
    cov = _read_cov(args.cov)
    info = _read_info(args.info, args.condition)
    out = Path(args.output)
    if out.exists() and not args.overwrite:
        raise CLIError(f"output file exists (use --overwrite): {out}")
    if not out.parent.is_dir():
        raise CLIError(f"output folder does not exist: {out.parent}")
    from .inverse import StepLISTA

    try:
        model = StepLISTA(
            fwd,
            cov,
            info,
            n_layers=args.n_layers,
            loose=args.loose,
            depth=args.depth,
            device=args.device,
            adaptive=not args.plain,
            verbose=False,
        )
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CLIError(
            f"the forward, covariance and info do not make a valid problem: "
            f"{_one_line(exc)}"
        ) from exc
    print(f"{model!r}")
    fit_kwargs = dict(random_state=args.seed)
    for name in ("n_samples", "n_epochs", "max_time"):
        if getattr(args, name) is not None:
            fit_kwargs[name] = getattr(args, name)
    t0 = time.perf_counter()
    model.fit(**fit_kwargs)
    print(f"Trained in {time.perf_counter() - t0:.1f} s")
    _call_save(model, out, overwrite=args.overwrite)
    print(f"Model written: {out}")
    return 0


def _call_save(model, fname, overwrite):
    if not hasattr(model, "save"):
        raise CLIError(
            "this installation of mne_lista has no StepLISTA.save (saving "
            "models is not available yet)"
        )
    if "overwrite" in inspect.signature(model.save).parameters:
        model.save(fname, overwrite=overwrite)
    else:
        model.save(fname)


def _read_model(fname, forward, noise_cov, info):
    """Call read_step_lista with whatever of forward/cov/info it accepts."""
    try:
        from . import read_step_lista
    except ImportError:  # pragma: no cover
        raise CLIError(
            "this installation of mne_lista has no read_step_lista "
            "(reading saved models is not available)"
        ) from None
    params = inspect.signature(read_step_lista).parameters
    kwargs = {}
    for name, value in (
        ("forward", forward),
        ("noise_cov", noise_cov),
        ("info", info),
        ("verbose", False),
    ):
        if name in params:
            kwargs[name] = value
    path = _check_file(fname, "model")
    try:
        return read_step_lista(path, **kwargs)
    except Exception as exc:
        raise CLIError(
            f"could not load the model {fname} for this forward/covariance/"
            f"data: {_one_line(exc)}"
        ) from exc


def _cmd_apply(args):
    _check_file(args.model, "model")
    fwd = _read_forward(args.forward)
    cov = _read_cov(args.cov)
    kind, data = _read_data(args.data, args.condition)
    info = data[0].info if kind == "evoked" else data.info
    model = _read_model(args.model, fwd, cov, info)
    if args.device is not None:
        try:
            model.to(args.device)
        except (RuntimeError, ValueError) as exc:
            raise CLIError(_one_line(exc)) from exc
    print(f"{model!r}")
    prefix = Path(args.output)
    if not prefix.parent.is_dir():
        raise CLIError(f"output folder does not exist: {prefix.parent}")
    apply_kwargs = dict(debias=not args.no_debias)
    if args.tol is not None:
        apply_kwargs["tol"] = args.tol
    written = []
    t0 = time.perf_counter()
    if kind == "evoked":
        for k, evoked in enumerate(data):
            evoked = _crop(evoked, args.tmin, args.tmax)
            stc = _apply(model.apply, evoked, args.alpha, **apply_kwargs)
            suffix = "" if len(data) == 1 else f"-{_safe_name(evoked.comment or k)}"
            written += _save_stc(stc, f"{prefix}{suffix}")
            print(f"  {evoked.comment!r}: {_n_active(stc)} active source(s)")
    else:
        epochs = _crop(data, args.tmin, args.tmax)
        if args.batch_size is not None:
            apply_kwargs["batch_size"] = args.batch_size
        stcs = _apply(
            model.apply_epochs,
            epochs,
            args.alpha,
            return_generator=True,
            **apply_kwargs,
        )
        n_digits = len(str(len(epochs)))
        for k, stc in enumerate(stcs):
            written += _save_stc(stc, f"{prefix}-epo{k:0{n_digits}d}")
        print(f"  {len(epochs)} epochs localized")
    print(
        f"Localized in {time.perf_counter() - t0:.2f} s; wrote {len(written)} file(s)"
    )
    for fname in written[:10]:
        print(f"  {fname}")
    if len(written) > 10:
        print(f"  ... ({len(written) - 10} more)")
    return 0


def _crop(inst, tmin, tmax):
    if tmin is None and tmax is None:
        return inst
    try:
        return inst.copy().crop(tmin, tmax)
    except ValueError as exc:
        raise CLIError(f"cannot crop the data: {_one_line(exc)}") from exc


def _apply(func, inst, alpha, **kwargs):
    try:
        return func(inst, alpha, **kwargs)
    except (ValueError, TypeError, RuntimeError) as exc:
        raise CLIError(_one_line(exc)) from exc


def _n_active(stc):
    return sum(len(v) for v in stc.vertices)


def available_benchmarks():
    """Names of the benchmarks in :mod:`mne_lista.bench`."""
    try:
        bench = importlib.import_module("mne_lista.bench")
    except ImportError:
        return []
    return sorted(
        m.name
        for m in pkgutil.iter_modules(bench.__path__)
        if not m.name.startswith("_")
    )


def _cmd_bench(args, extra):
    names = available_benchmarks()
    if args.name not in names:
        raise CLIError(
            f"unknown benchmark {args.name!r}; available: "
            f"{', '.join(names) if names else 'none'}"
        )
    mod = importlib.import_module(f"mne_lista.bench.{args.name}")
    argv = list(extra)
    if args.out is not None:
        argv += ["--out", str(args.out)]
    if args.quick:
        argv += ["--quick"]
    main = getattr(mod, "main", None)
    if main is None:
        raise CLIError(f"benchmark {args.name!r} has no main()")
    params = inspect.signature(main).parameters
    old = sys.argv
    sys.argv = [f"{_PROG} bench {args.name}"] + argv
    try:
        ret = main(argv) if params else main()
    except SystemExit as exc:  # the benchmark's own argument parser
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
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
            "Sparse MEG/EEG source localization with Step-LISTA, ISTA unrolled "
            "with learned step sizes (Ablin et al., NeurIPS 2019), for MNE-Python."
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
            "array on MNE's Neuromag helmet surface, volume source grid), fit "
            "Step-LISTA on it, localize, and compare Step-LISTA, FISTA and "
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
        help="coarse grid, small training: seconds instead of minutes (tests)",
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
        help="train a Step-LISTA model for a forward model -> model file",
        description=(
            "Build the (group) Lasso problem of FORWARD, COV and the channels "
            "of EVOKED_OR_INFO exactly as mne.inverse_sparse.mixed_norm does, "
            "train Step-LISTA on simulated sources pushed through it, and save "
            "the model."
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
        help="plain Step-LISTA, one learned step per layer "
        "(StepLISTA(adaptive=False)); by default the adaptive network "
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
        help="number of simulated training samples (default: that of fit())",
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
            "Load MODEL (checked against FORWARD and COV), localize DATA (an "
            "evoked or an epochs fif file) and write source estimates "
            "OUT_PREFIX[-condition|-epoN]-{lh,rh,vl}.stc."
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
        type=_positive_float,
        required=True,
        help="regularization in %% of alpha_max over the window, as mixed_norm",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="OUT_PREFIX", help="output prefix"
    )
    p.add_argument("--condition", default=None, help="evoked condition (name/index)")
    p.add_argument("--tmin", type=float, default=None, help="window start (s)")
    p.add_argument("--tmax", type=float, default=None, help="window end (s)")
    p.add_argument(
        "--tol",
        type=_positive_float,
        default=None,
        help="finish samples whose relative duality gap exceeds TOL exactly",
    )
    p.add_argument("--no-debias", action="store_true", help="skip debiasing")
    p.add_argument("--batch-size", type=int, default=None, help="epochs chunk size")
    p.add_argument("--device", default=None, help="torch device (default: model's)")
    _add_common(p)

    names = available_benchmarks()
    p = sub.add_parser(
        "bench",
        help="run a benchmark (prints a table, writes JSON)",
        description=(
            "Run the benchmark mne_lista.bench.NAME: it prints a table and "
            "writes its figures as JSON. Available: "
            f"{', '.join(names) if names else 'none installed'}. Options "
            "after NAME that are not listed here go to the benchmark itself "
            "(see 'mne-lista bench NAME -- --help')."
        ),
    )
    p.add_argument("name", metavar="NAME", help=f"one of: {', '.join(names)}")
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

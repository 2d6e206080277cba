"""Unsupervised training of the unrolled networks on the Lasso objective.

The loss of a batch is the mean over its columns of the Lasso objective of
the network's output divided by the objective at zero, ``F(z_T) / F(0)``
with ``F(0) = 1/2 ||x||^2``, so that every sample counts equally whatever
its scale, SNR or ``lam``. No solution of the Lasso is needed.

Two optimizers are available (see :func:`train`):

- ``'adam'``: minibatch Adam with a validation-based early stopping;
- ``'gd'``: full-batch gradient descent with the adaptive step and the
  backtracking of the Step-LISTA paper's code (accepted step: learning rate
  x4, loss increase: parameters restored and learning rate halved).
"""

import copy
import time

import numpy as np
import torch
from mne.utils import (
    ProgressBar,
    _check_option,
    _validate_type,
    logger,
    verbose,
    warn,
)

from ._lasso import _as_lam, objective, zero_objective


def normalized_objective(net, X, lam, n_layers=None, *, all_layers=False):
    """Per-sample ``F(z) / F(0)`` of the network's output, shape (B,).

    With ``all_layers``, the mean over layers of that quantity. A network
    defining its own ``normalized_objective(X, lam, n_layers, all_layers=)``
    (e.g. :class:`mne_lista.mxne.StepMxNENet` on windows) uses it.
    """
    hook = getattr(net, "normalized_objective", None)
    if hook is not None:
        return hook(X, lam, n_layers, all_layers=all_layers)
    X = X.to(device=net.D.device, dtype=net.D.dtype)
    lam = _as_lam(lam, X.shape[1], X)
    f0 = zero_objective(X)
    if not all_layers:
        Z = net(X, lam, n_layers)
        return objective(net.D, X, Z, lam, net.n_orient) / f0
    outs = net(X, lam, n_layers, return_all=True)
    losses = [objective(net.D, X, Z, lam, net.n_orient) / f0 for Z in outs]
    return torch.stack(losses).mean(0)


def _batched_objectives(net, X, lam, n_layers=None, batch_size=2048):
    """Normalized objectives of the network's outputs, batch by batch."""
    for start in range(0, X.shape[1], batch_size):
        sl = slice(start, start + batch_size)
        yield normalized_objective(net, X[:, sl], lam[sl], n_layers)


@torch.no_grad()
def evaluate(net, X, lam, n_layers=None, batch_size=2048):
    """Mean normalized objective of the network over a data set (no grad)."""
    return _evaluate_and_count(net, X, lam, n_layers, batch_size)[0]


@torch.no_grad()
def _evaluate_and_count(net, X, lam, n_layers=None, batch_size=2048):
    """Mean normalized objective and number of outputs worse than zero."""
    total, n_diverged = 0.0, 0
    for f in _batched_objectives(net, X, lam, n_layers, batch_size):
        total += float(f.sum())
        n_diverged += int((~(f <= 1.0)).sum())
    return total / X.shape[1], n_diverged


_ADAPTIVE_HINT = (
    "The adaptive network (the default, StepLISTA(adaptive=True)) never "
    "increases the objective"
)


def _as_data(net, X, lam, name):
    from ._lasso import to_tensor

    X = to_tensor(X, device=net.D.device, dtype=net.D.dtype)
    n_dim = 3 if hasattr(net, "normalized_objective") else 2  # windows: 3D
    if X.ndim != n_dim or X.shape[0] != net.D.shape[0]:
        raise ValueError(
            f"{name} must have shape ({net.D.shape[0]}, n_samples), got "
            f"{tuple(X.shape)}"
        )
    lam = _as_lam(to_tensor(lam, device=X.device, dtype=X.dtype), X.shape[1], X)
    return X, lam


@verbose
def train(
    net,
    X,
    lam,
    X_val,
    lam_val,
    *,
    method="adam",
    n_epochs=100,
    batch_size=64,
    lr=0.05,
    patience=8,
    stages=None,
    all_layers=False,
    max_time=None,
    random_state=None,
    verbose=None,
):
    """Train a network unsupervised on the normalized Lasso objective.

    Parameters
    ----------
    net : torch.nn.Module
        A network of :mod:`mne_lista.networks` (trained in place).
    X, lam : array | Tensor, shapes (n, N) and (N,)
        Training data and regularization parameters.
    X_val, lam_val : array | Tensor, shapes (n, N_val) and (N_val,)
        Validation data for early stopping (and best-parameter selection).
    method : 'adam' | 'gd'
        Minibatch Adam or full-batch gradient descent with backtracking.
    n_epochs : int
        Maximum number of epochs (Adam: passes over the training set; GD:
        gradient steps) per stage.
    batch_size : int
        Minibatch size (Adam).
    lr : float
        Learning rate (Adam; GD starts at 1 as in the paper's code).
    patience : int
        Stop a stage after that many evaluations without a decrease of the
        validation loss (Adam: one per epoch; GD: one every step). With
        Adam, the learning rate is also halved after ``patience // 2``
        epochs without decrease.
    stages : None | list of int
        Layer-wise training: train the network truncated at each number of
        layers of the list in turn (e.g. ``[5, 10, 20]``), each stage warm
        started from the previous one (its new layers start from the step of
        the last trained layer). None trains all layers at once.
    all_layers : bool
        Average the loss over the outputs of all layers (deep supervision)
        instead of using the last output only.
    max_time : float | None
        Wall-clock budget in seconds for the whole training.
    random_state : None | int
        Seed of the minibatch shuffling.
    verbose : bool | str | int | None
        Control verbosity of the logging output (and the progress bar).

    Returns
    -------
    history : dict
        ``train_loss``, ``val_loss`` (lists, one entry per evaluation),
        ``stage`` (number of layers at each evaluation), ``best_val_loss``,
        ``init_val_loss``, ``n_evals``, ``time``, ``n_restored`` (Adam:
        the number of diverging steps or epochs undone, see Notes) and
        ``n_diverged`` (``{'val': k}``, the number of validation samples
        whose output is worse than zero: a warning is raised when k > 0;
        another one when the validation loss went down by less than 0.01 %%).

    Notes
    -----
    Step sizes beyond ``2 / L`` on many layers make the iterates of some
    samples blow up. With Adam, a batch loss that is not finite or above 1
    (worse than the zero solution), or a validation loss above 1.5 times the
    best one, restores the last good steps, resets Adam's moments and
    lowers the learning rate.
    """
    _check_option("method", method, ("adam", "gd"))
    _validate_type(n_epochs, "int", "n_epochs")
    _validate_type(batch_size, "int", "batch_size")
    X, lam = _as_data(net, X, lam, "X")
    X_val, lam_val = _as_data(net, X_val, lam_val, "X_val")
    if stages is None:
        stages = [net.n_layers]
    stages = [int(s) for s in stages]
    if any(s < 1 or s > net.n_layers for s in stages) or stages != sorted(stages):
        raise ValueError(
            f"stages must be increasing numbers of layers in [1, {net.n_layers}], "
            f"got {stages}"
        )
    gen = torch.Generator().manual_seed(
        int(np.random.default_rng(random_state).integers(2**31))
    )
    t0 = time.time()
    init_val = evaluate(net, X_val, lam_val)
    history = dict(
        train_loss=[],
        val_loss=[],
        stage=[],
        init_val_loss=init_val,
        method=method,
        n_restored=0,
    )
    n_total = len(stages) * n_epochs
    with ProgressBar(n_total, mesg="Training") as pbar:
        _train_stages(
            net,
            X,
            lam,
            X_val,
            lam_val,
            stages,
            method,
            n_epochs,
            batch_size,
            lr,
            patience,
            all_layers,
            gen,
            history,
            max_time,
            t0,
            pbar,
        )
    history["best_val_loss"], n_div = _evaluate_and_count(net, X_val, lam_val)
    history["n_diverged"] = dict(val=n_div)
    history["n_evals"] = len(history["val_loss"])
    history["time"] = time.time() - t0
    logger.info(
        f"    Validation loss F(z)/F(0): {init_val:.6g} (untrained) -> "
        f"{history['best_val_loss']:.6g} in {history['time']:.1f} s"
    )
    if n_div:
        warn(
            "the trained network does worse than the zero solution on "
            f"{n_div} of {X_val.shape[1]} validation samples (mean F(z)/F(0) = "
            f"{history['best_val_loss']:.3g}): its steps diverge on these data. "
            + _ADAPTIVE_HINT
        )
    elif not history["best_val_loss"] < (1.0 - 1e-4) * init_val:
        warn(
            "the training lowered the validation loss of the untrained network "
            f"by less than 0.01 % ({init_val:.6g} -> "
            f"{history['best_val_loss']:.6g}; {history['n_restored']} diverging "
            "steps undone): the network keeps about its initial parameters "
            "(for Step-LISTA, the ISTA steps 1/L). Try another random_state, "
            "or the adaptive network (the default, StepLISTA(adaptive=True))"
        )
    return history


def _train_stages(
    net,
    X,
    lam,
    X_val,
    lam_val,
    stages,
    method,
    n_epochs,
    batch_size,
    lr,
    patience,
    all_layers,
    gen,
    history,
    max_time,
    t0,
    pbar,
):
    done = 0
    prev = 0
    for n_layers in stages:
        if prev and hasattr(net, "log_steps") and net.log_steps.ndim == 1:
            with torch.no_grad():  # warm start the new layers
                net.log_steps[prev:n_layers] = 0.0  # ISTA
                val_ista = evaluate(net, X_val, lam_val, n_layers)
                net.log_steps[prev:n_layers] = net.log_steps[prev - 1]
                if not evaluate(net, X_val, lam_val, n_layers) <= val_ista:
                    # the last step repeated diverges (steps beyond 2 / L
                    # suit few layers): the new layers start as ISTA
                    net.log_steps[prev:n_layers] = 0.0
        prev = n_layers
        fit = _fit_adam if method == "adam" else _fit_gd
        out_of_time = fit(
            net,
            X,
            lam,
            X_val,
            lam_val,
            n_layers=n_layers,
            n_epochs=n_epochs,
            batch_size=batch_size,
            lr=lr,
            patience=patience,
            all_layers=all_layers,
            gen=gen,
            history=history,
            deadline=None if max_time is None else t0 + max_time,
            pbar=pbar,
            done=done,
        )
        done += n_epochs
        pbar.update(done)
        if out_of_time:
            logger.info("    Training time budget reached")
            break


class _DivergenceGuard:
    """Undo an Adam step that made the unrolled network diverge.

    Steps beyond ``2 / L`` on many layers make the iterates blow up: the
    loss jumps by orders of magnitude and Adam's moment estimates are
    poisoned for the rest of the training. A batch loss that is not finite
    or exceeds 1 (the network does worse than the zero solution) restores
    the parameters of the last accepted step, resets Adam's moments and
    halves its learning rate.
    """

    def __init__(self, net, opt):
        self.opt = opt
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.good = [p.detach().clone() for p in self.params]
        self.n_restored = 0

    def diverged(self, loss):
        if np.isfinite(loss) and loss <= 1.0:
            self.good = [p.detach().clone() for p in self.params]
            return False
        with torch.no_grad():
            for p, g in zip(self.params, self.good):
                p.copy_(g)
        self.restart(2.0)
        logger.debug(f"    diverging step undone (batch loss {loss:.3g})")
        return True

    def restart(self, factor):
        """Fresh Adam moments, learning rate / factor, current params good."""
        self.opt.state.clear()
        for group in self.opt.param_groups:
            group["lr"] /= factor
        self.good = [p.detach().clone() for p in self.params]
        self.n_restored += 1


def _fit_adam(
    net,
    X,
    lam,
    X_val,
    lam_val,
    *,
    n_layers,
    n_epochs,
    batch_size,
    lr,
    patience,
    all_layers,
    gen,
    history,
    deadline,
    pbar,
    done,
):
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=0.5, patience=max(patience // 2, 1)
    )
    n = X.shape[1]
    mon = _StageMonitor(net, X_val, lam_val, n_layers, patience, history, pbar, done)
    guard = _DivergenceGuard(net, opt)
    for epoch in range(n_epochs):
        perm = torch.randperm(n, generator=gen).to(X.device)
        tot = 0.0
        for start in range(0, n, batch_size):
            idx = perm[start : start + batch_size]
            opt.zero_grad()
            loss = normalized_objective(
                net, X[:, idx], lam[idx], n_layers, all_layers=all_layers
            ).mean()
            if guard.diverged(float(loss.detach())):
                continue  # parameters restored, learning rate halved
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(idx)
        val = mon.end_epoch(epoch, tot / n)
        if not np.isfinite(val) or val > min(1.0, 1.5 * mon.best):
            # diverged on some validation samples: back to the best steps,
            # fresh moments, smaller learning rate
            mon.restore_best()
            guard.restart(4.0)
            logger.debug(f"    epoch {epoch}: validation diverged ({val:.3g}), undone")
            mon.bad += 1
        else:
            sched.step(val)
            mon.update(val)
        if mon.bad >= patience or mon.out_of_time(deadline):
            break
    mon.restore_best()
    history["n_restored"] += guard.n_restored
    return mon.out_of_time(deadline)


def _fit_gd(
    net,
    X,
    lam,
    X_val,
    lam_val,
    *,
    n_layers,
    n_epochs,
    batch_size,
    lr,
    patience,
    all_layers,
    gen,
    history,
    deadline,
    pbar,
    done,
):
    """Full-batch GD with the adaptive step of the Step-LISTA paper's code."""
    params = [p for p in net.parameters() if p.requires_grad]
    lr = 1.0

    def full_loss():
        tot = 0.0
        n = X.shape[1]
        for start in range(0, n, max(batch_size, 1024)):
            sl = slice(start, start + max(batch_size, 1024))
            loss = (
                normalized_objective(
                    net, X[:, sl], lam[sl], n_layers, all_layers=all_layers
                ).sum()
                / n
            )
            loss.backward()
            tot += float(loss.detach())
        return tot

    for p in params:
        p.grad = None
    loss = full_loss()
    mon = _StageMonitor(net, X_val, lam_val, n_layers, patience, history, pbar, done)
    for it in range(n_epochs):
        saved = [p.detach().clone() for p in params]
        grads = [p.grad.detach().clone() for p in params]
        while lr > 1e-20:
            with torch.no_grad():
                for p, s, g in zip(params, saved, grads):
                    p.copy_(s - lr * g)
            for p in params:
                p.grad = None
            new_loss = full_loss()
            if new_loss <= loss:
                lr = min(lr * 4, 1e12)
                break
            lr /= 2
        else:  # no decrease found
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
            break
        loss = new_loss
        mon.update(mon.end_epoch(it, loss))
        if mon.bad >= patience or mon.out_of_time(deadline):
            break
    mon.restore_best()
    return mon.out_of_time(deadline)


class _StageMonitor:
    """Validation, history, best steps and early stopping of a training stage."""

    def __init__(self, net, X_val, lam_val, n_layers, patience, history, pbar, done):
        self.net, self.X_val, self.lam_val = net, X_val, lam_val
        self.n_layers, self.patience = n_layers, patience
        self.history, self.pbar, self.done = history, pbar, done
        self.best = evaluate(net, X_val, lam_val, n_layers)
        self.best_state = copy.deepcopy(net.state_dict())
        self.bad = 0  # epochs without improvement

    def end_epoch(self, epoch, train_loss):
        """Validate, record the epoch in the history; return the val. loss."""
        val = evaluate(self.net, self.X_val, self.lam_val, self.n_layers)
        self.history["train_loss"].append(train_loss)
        self.history["val_loss"].append(val)
        self.history["stage"].append(self.n_layers)
        self.pbar.update(self.done + epoch + 1)
        return val

    def update(self, val):
        """Keep the best parameters; count the epochs without improvement."""
        if val < self.best:
            self.best, self.bad = val, 0
            self.best_state = copy.deepcopy(self.net.state_dict())
        else:
            self.bad += 1

    def restore_best(self):
        self.net.load_state_dict(self.best_state)

    @staticmethod
    def out_of_time(deadline):
        return deadline is not None and time.time() > deadline


# training budget of the defaults, in floating point operations (one to two
# minutes at 30-60 GFLOP/s, two CPU cores)
_FLOP_BUDGET = 2e12


def _default_budget(net, n_samples, n_val):
    """Default numbers of samples and epochs from the size of the gain."""
    n, m = net.D.shape
    if n_samples is None:
        n_samples = 2048 if n * m <= 1e6 else 1024
    if n_val is None:
        n_val = max(64, n_samples // 4)
    per_sample = 6.0 * net.n_layers * 2.0 * n * m  # forward + backward
    per_epoch = per_sample * (n_samples + n_val / 3.0)
    min_epochs = getattr(net, "min_default_epochs", 4)
    n_epochs = int(np.clip(_FLOP_BUDGET / per_epoch, min_epochs, max(30, min_epochs)))
    return n_samples, n_val, n_epochs


@verbose
def fit_network(
    net,
    problem,
    *,
    n_samples=None,
    n_val=None,
    lam_range=(0.1, 0.8),
    n_sources=(1, 5),
    snr=(0.0, 20.0),
    extent=(0.0, 1.2),
    method="adam",
    n_epochs=None,
    batch_size=None,
    lr=0.05,
    patience=10,
    max_time=None,
    random_state=None,
    verbose=None,
):
    """Simulate training data and train a network on it (the default recipe).

    Parameters
    ----------
    net : torch.nn.Module
        The network (trained in place).
    problem : LassoProblem
        The problem the network solves.
    n_samples, n_val : int | None
        Numbers of training and validation samples (None: set from the size
        of the gain, see Notes).
    lam_range, n_sources, snr, extent
        Simulation parameters, see
        :func:`mne_lista.simulation.simulate_data`.
    method, lr, patience, max_time
        Training parameters, see :func:`train`.
    batch_size : int | None
        Minibatch size (None: 32, or 16 for gains of more than 10^6 entries
        to take more steps within the budget).
    n_epochs : int | None
        Maximum number of epochs (None: from a budget of floating point
        operations, see Notes).
    random_state : None | int
        Seed of the simulations and of the training.
    %(verbose)s

    Returns
    -------
    history : dict
        The history of :func:`train`, plus ``lam_range``, ``n_samples``,
        ``n_val``, ``n_epochs`` and ``random_state``; ``n_diverged`` gets
        the count on harder samples too (``harder``, see Notes).

    Notes
    -----
    The default budget is ``2e12`` floating point operations (one to two
    minutes on two CPU cores) spread over 2048 training samples (1024 for
    gains of more than 10^6 entries) and a validation set of a quarter of
    that, with 4 to 30 epochs (at least ``net.min_default_epochs`` when the
    network defines it: 12 for the support-scaled networks, whose training
    is noisier).

    After training, the outputs on the validation samples (by :func:`train`)
    and on as many harder ones (more sources than trained, up to twice as
    many, and an SNR up to 5 dB below the trained range) are checked: a
    warning for each set counts the samples whose objective is above that of
    the zero solution. Learned steps beyond ``2 / L`` can diverge on some
    samples (seen with plain Step-LISTA at 20 layers on the 516-source
    surface forward).
    """
    from .simulation import _check_range, simulate_data

    lam_range = _check_range(lam_range, "lam_range")
    n_samples, n_val, auto_epochs = _default_budget(net, n_samples, n_val)
    n_epochs = auto_epochs if n_epochs is None else n_epochs
    if batch_size is None:
        batch_size = 16 if net.D.numel() > 1e6 else 32
    rng = np.random.default_rng(random_state)
    seeds = rng.integers(2**31, size=4)  # (the first 3 as with size=3)
    kw = dict(n_sources=n_sources, snr=snr, extent=extent, lam_range=lam_range)
    logger.info(f"    Simulating {n_samples} training and {n_val} validation samples")
    X, lam = simulate_data(problem, n_samples, random_state=seeds[0], **kw)
    X_val, lam_val = simulate_data(problem, n_val, random_state=seeds[1], **kw)
    history = train(
        net,
        X,
        lam,
        X_val,
        lam_val,
        method=method,
        n_epochs=n_epochs,
        batch_size=batch_size,
        lr=lr,
        patience=patience,
        max_time=max_time,
        random_state=int(seeds[2]),
        verbose=verbose,
    )
    # divergence check on harder samples (more sources, lower SNR than
    # trained; train counted the validation samples), outputs worse than zero
    k_hi = _check_range(n_sources, "n_sources", low=1, integer=True)[1]
    snr_lo = _check_range(snr, "snr")[0]
    n_pos = problem.n_positions
    kw.update(n_sources=(min(k_hi + 1, n_pos), min(max(2 * k_hi, k_hi + 1), n_pos)))
    kw.update(snr=(snr_lo - 5.0, snr_lo))
    X_hard, lam_hard = simulate_data(problem, n_val, random_state=seeds[3], **kw)
    n_div = _evaluate_and_count(net, *_as_data(net, X_hard, lam_hard, "X"))[1]
    history["n_diverged"]["harder"] = n_div
    if n_div:
        warn(
            f"the trained steps diverge on {n_div} of {n_val} samples harder than "
            f"the training ones ({kw['n_sources'][0]}-{kw['n_sources'][1]} "
            f"sources, SNR {kw['snr'][0]:g}-{kw['snr'][1]:g} dB): there the output "
            "is worse than zero. " + _ADAPTIVE_HINT
        )
    history.update(
        lam_range=lam_range,
        n_samples=n_samples,
        n_val=n_val,
        n_epochs=n_epochs,
        batch_size=batch_size,
        random_state=random_state,
    )
    return history


__all__ = ["train", "fit_network", "evaluate", "normalized_objective"]

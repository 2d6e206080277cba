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
from types import SimpleNamespace

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

from . import _l21


def normalized_objective(net, M, lam, n_layers=None, *, all_layers=False):
    """Per-window ``F(X) / F(0)`` of the network's output, shape (W,).

    ``M`` is ``(n, W, K)`` (a per-sample batch is ``(n, B, 1)``). With
    ``all_layers``, the mean over layers of that quantity.
    """
    f0 = _l21.zero_objective(M)
    sparse_frac = net.sparse_frac(M)
    outs = net(M, lam, n_layers, return_all=all_layers)
    outs = outs if all_layers else [outs]
    losses = [
        _l21.objective(net.G, M, X, lam, net.n_orient, sparse_frac=sparse_frac) / f0
        for X in outs
    ]
    return losses[0] if len(losses) == 1 else torch.stack(losses).mean(0)


class _eval_mode:
    """Put a network in evaluation mode inside the block (restored on exit)."""

    def __init__(self, net):
        self.net = net

    def __enter__(self):
        self.was_training = self.net.training
        self.net.eval()

    def __exit__(self, *args):
        self.net.train(self.was_training)


def _batched_objectives(net, M, lam, n_layers=None, batch_size=2048):
    """Normalized objectives of the network's outputs, batch by batch."""
    for start in range(0, M.shape[1], batch_size):
        sl = slice(start, start + batch_size)
        yield normalized_objective(net, M[:, sl], lam[sl], n_layers)


@torch.no_grad()
def evaluate(net, M, lam, n_layers=None, batch_size=2048):
    """Mean normalized objective of the network over a data set.

    ``M`` is ``(n, W, K)`` windows or ``(n, B)`` per-sample problems. The
    network runs in evaluation mode (with its backtracking, if any).
    """
    M, lam = _as_data(net, M, lam, "M")
    return _evaluate_and_count(net, M, lam, n_layers, batch_size)[0]


@torch.no_grad()
def _evaluate_and_count(net, M, lam, n_layers=None, batch_size=2048):
    """Mean normalized objective and number of outputs worse than zero."""
    total, n_diverged = 0.0, 0
    with _eval_mode(net):
        for f in _batched_objectives(net, M, lam, n_layers, batch_size):
            total += float(f.sum())
            n_diverged += int((~(f <= 1.0)).sum())
    return total / M.shape[1], n_diverged


_ADAPTIVE_HINT = (
    "The adaptive network (the default, StepLISTA(adaptive=True)) never "
    "increases the objective"
)


def _as_data(net, M, lam, name):
    """Training data as windows (n, W, K) on the network's device and dtype.

    A 2D array holds per-sample problems (one column each): (n, B, 1).
    """
    M = _l21.to_tensor(M, device=net.G.device, dtype=net.G.dtype)
    if M.ndim == 2:
        M = M[:, :, None]
    if M.ndim != 3 or M.shape[0] != net.n_channels:
        raise ValueError(
            f"{name} must have shape ({net.n_channels}, n_samples) or "
            f"({net.n_channels}, n_windows, K), got {tuple(M.shape)}"
        )
    lam = _l21.to_tensor(lam, device=M.device, dtype=M.dtype)
    return M.contiguous(), _l21.as_lam(lam, M.shape[1], M)


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
    if getattr(net, "step_rule", None) == "support":
        ref = net.log_ref_support
        if bool(torch.isnan(ref).any()):  # fixed once, on the validation data
            net.set_support_reference(X_val[:, :2048], lam_val[:2048])
    net.train()
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
        run = SimpleNamespace(
            X=X,
            lam=lam,
            X_val=X_val,
            lam_val=lam_val,
            n_epochs=n_epochs,
            batch_size=batch_size,
            lr=lr,
            patience=patience,
            all_layers=all_layers,
            gen=gen,
            history=history,
            deadline=None if max_time is None else t0 + max_time,
            pbar=pbar,
        )
        _train_stages(net, run, stages, method)
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
            "(the pretrained ones, or the ISTA steps 1/L). Try another "
            "random_state, "
            "or the adaptive network (the default, StepLISTA(adaptive=True))"
        )
    return history


def _train_stages(net, run, stages, method):
    """Train stage by stage (``run``: data, options and state of the training)."""
    done = 0
    prev = 0
    for n_layers in stages:
        if prev and hasattr(net, "log_steps") and net.log_steps.ndim == 1:
            with torch.no_grad():  # warm start the new layers
                net.log_steps[prev:n_layers] = 0.0  # ISTA
                val_ista = evaluate(net, run.X_val, run.lam_val, n_layers)
                net.log_steps[prev:n_layers] = net.log_steps[prev - 1]
                if not evaluate(net, run.X_val, run.lam_val, n_layers) <= val_ista:
                    # the last step repeated diverges (steps beyond 2 / L
                    # suit few layers): the new layers start as ISTA
                    net.log_steps[prev:n_layers] = 0.0
        prev = n_layers
        fit = _fit_adam if method == "adam" else _fit_gd
        out_of_time = fit(net, run, n_layers, done)
        done += run.n_epochs
        run.pbar.update(done)
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


def _fit_adam(net, run, n_layers, done):
    X, lam = run.X, run.lam
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=run.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, factor=0.5, patience=max(run.patience // 2, 1)
    )
    n = X.shape[1]
    mon = _StageMonitor(net, run, n_layers, done)
    guard = _DivergenceGuard(net, opt)
    for epoch in range(run.n_epochs):
        perm = torch.randperm(n, generator=run.gen).to(X.device)
        tot = 0.0
        for start in range(0, n, run.batch_size):
            idx = perm[start : start + run.batch_size]
            opt.zero_grad()
            loss = normalized_objective(
                net, X[:, idx], lam[idx], n_layers, all_layers=run.all_layers
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
        if mon.done_training():
            break
    mon.restore_best()
    run.history["n_restored"] += guard.n_restored
    return mon.out_of_time()


def _fit_gd(net, run, n_layers, done):
    """Full-batch GD with the adaptive step of the Step-LISTA paper's code."""
    X, lam, batch_size = run.X, run.lam, run.batch_size
    params = [p for p in net.parameters() if p.requires_grad]
    lr = 1.0

    def full_loss():
        tot = 0.0
        n = X.shape[1]
        for start in range(0, n, max(batch_size, 1024)):
            sl = slice(start, start + max(batch_size, 1024))
            loss = (
                normalized_objective(
                    net, X[:, sl], lam[sl], n_layers, all_layers=run.all_layers
                ).sum()
                / n
            )
            loss.backward()
            tot += float(loss.detach())
        return tot

    for p in params:
        p.grad = None
    loss = full_loss()
    mon = _StageMonitor(net, run, n_layers, done)
    for it in range(run.n_epochs):
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
        if mon.done_training():
            break
    mon.restore_best()
    return mon.out_of_time()


class _StageMonitor:
    """Validation, history, best steps and early stopping of a training stage."""

    def __init__(self, net, run, n_layers, done):
        self.net, self.run, self.n_layers, self.done = net, run, n_layers, done
        self.best = evaluate(net, run.X_val, run.lam_val, n_layers)
        self.best_state = copy.deepcopy(net.state_dict())
        self.bad = 0  # epochs without improvement

    def end_epoch(self, epoch, train_loss):
        """Validate, record the epoch in the history; return the val. loss."""
        val = evaluate(self.net, self.run.X_val, self.run.lam_val, self.n_layers)
        history = self.run.history
        history["train_loss"].append(train_loss)
        history["val_loss"].append(val)
        history["stage"].append(self.n_layers)
        self.run.pbar.update(self.done + epoch + 1)
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

    def out_of_time(self):
        deadline = self.run.deadline
        return deadline is not None and time.time() > deadline

    def done_training(self):
        """Early stopping: too many epochs without improvement, or no time."""
        return self.bad >= self.run.patience or self.out_of_time()


# training budget of the defaults, in floating point operations (one to two
# minutes at 30-60 GFLOP/s)
_FLOP_BUDGET = 2e12


# fewest epochs of the default training: the support-scaled steps train
# noisier (docs/bench: 12 epochs instead of 4 gained about 10 FISTA iterations
# on the 7 mm volume)
_MIN_EPOCHS = {"support": 12}


def _default_budget(net, n_samples, n_val):
    """Default numbers of samples and epochs from the size of the gain."""
    n, m = net.G.shape
    if n_samples is None:
        n_samples = 2048 if n * m <= 1e6 else 1024
    if n_val is None:
        n_val = max(64, n_samples // 4)
    per_sample = 6.0 * net.n_layers * 2.0 * n * m  # forward + backward
    per_epoch = per_sample * (n_samples + n_val / 3.0)
    min_epochs = _MIN_EPOCHS.get(getattr(net, "step_rule", None), 4)
    n_epochs = int(np.clip(_FLOP_BUDGET / per_epoch, min_epochs, max(30, min_epochs)))
    return n_samples, n_val, n_epochs


@verbose
def fit_network(
    net,
    simulate,
    *,
    harder=None,
    n_samples=None,
    n_val=None,
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
    net : UnrolledISTA
        The network (trained in place).
    simulate : callable
        ``simulate(n, random_state=seed) -> (M, lam)``: ``n`` training
        problems (per-sample ``(n_channels, n)`` or windows
        ``(n_channels, n, K)``) and their regularization, e.g.
        :func:`mne_lista.simulation.simulate_data` with its options bound.
    harder : callable | None
        ``harder(n, random_state=seed) -> (M, lam, description)``: problems
        harder than the training ones, to check the trained network on (see
        Notes); None skips the check.
    n_samples, n_val : int | None
        Numbers of training and validation problems (None: set from the size
        of the gain, see Notes).
    method, lr, patience, max_time
        Training parameters, see :func:`train`.
    n_epochs : int | None
        Maximum number of epochs (None: from a budget of floating point
        operations, see Notes).
    batch_size : int | None
        Minibatch size (None: 32, or 16 for gains of more than 10^6 entries
        to take more steps within the budget).
    random_state : None | int
        Seed of the simulations and of the training.
    %(verbose)s

    Returns
    -------
    history : dict
        The history of :func:`train`, plus ``n_samples``, ``n_val``,
        ``n_epochs``, ``batch_size`` and ``random_state``; ``n_diverged``
        gets the count on the harder problems too (``harder``).

    Notes
    -----
    The default budget is ``2e12`` floating point operations spread over
    2048 training problems (1024 for gains of more than 10^6 entries) and a
    validation set of a quarter of that, with 4 to 30 epochs (at least 12
    for the support-scaled step rule, whose training is noisier).

    After training, the outputs on the validation problems (by
    :func:`train`) and on as many harder ones are checked: a warning for
    each set counts the problems whose objective is above that of the zero
    solution. Learned steps beyond ``2 / L`` can diverge on some problems.
    """
    n_samples, n_val, auto_epochs = _default_budget(net, n_samples, n_val)
    n_epochs = auto_epochs if n_epochs is None else n_epochs
    if batch_size is None:
        batch_size = 16 if net.G.numel() > 1e6 else 32
    rng = np.random.default_rng(random_state)
    seeds = rng.integers(2**31, size=4)
    logger.info(f"    Simulating {n_samples} training and {n_val} validation problems")
    M, lam = simulate(n_samples, random_state=seeds[0])
    M_val, lam_val = simulate(n_val, random_state=seeds[1])
    history = train(
        net,
        M,
        lam,
        M_val,
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
    if harder is not None:
        M_hard, lam_hard, desc = harder(n_val, random_state=seeds[3])
        n_div = _evaluate_and_count(net, *_as_data(net, M_hard, lam_hard, "M"))[1]
        history["n_diverged"]["harder"] = n_div
        if n_div:
            warn(
                f"the trained steps diverge on {n_div} of {n_val} problems harder "
                f"than the training ones ({desc}): there the output is worse than "
                "zero. " + _ADAPTIVE_HINT
            )
    history.update(
        n_samples=n_samples,
        n_val=n_val,
        n_epochs=n_epochs,
        batch_size=batch_size,
        random_state=random_state,
    )
    return history


__all__ = ["train", "fit_network", "evaluate", "normalized_objective"]

"""Count probe on frozen latents (paper section 4.3, Table 1).

A small classifier reads the VAE's latent mean ``mu`` and predicts the count class
0, 1, 2, 3, 4+ (counts >= 4 go to class 4). As in the paper's footnote 1 it is an
MLP with two hidden layers of 160 units and ReLU, trained with class-weighted
cross-entropy (weights ``n / (K * n_k)``, so each class carries equal total
weight) on the train split and scored on the test split with the three metrics of
:mod:`vae.metrics`.

Choices the paper leaves open, made explicit here: inputs are standardised with
the train split's mean and standard deviation; Adam (lr 1e-3, weight decay 1e-4),
batches of 256; a random 10% of the train split is held out for early stopping on
its weighted loss (patience 15 epochs, at most 200), and the weights of the best
epoch are kept. Everything random (initial weights, hold-out, batch order) comes
from one ``numpy.random.Generator``, so a seed fixes the result on a given machine.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Dict, Optional, Sequence, Tuple

import h5py
import numpy as np

from synthcount._io import atomic_write, write_json_atomic

from . import metrics
from .encode import PROPERTY_FIELDS

__all__ = ["NUM_CLASSES", "CLASS_NAMES", "PUBLISHED_TABLE1", "load_latents", "fit_probe", "fit_logistic",
           "exact_count_probe", "probe_arrays", "run_probe", "format_table1", "table1_rows",
           "table1_rows_with_logistic", "TABLE1_NOTES", "json_clean"]

NUM_CLASSES = 5
CLASS_NAMES = ("0", "1", "2", "3", "4+")

# Table 1 of the paper, in % (published numbers, not measured here). Rows 2-4
# come from Zhang et al. (count AP, VOC 11-point).
PUBLISHED_TABLE1 = (
    ("Chance", (27.5, 46.5, 18.6, 11.7, 9.7), 22.8),
    ("GIST [39]", (67.4, 65.0, 32.3, 17.5, 24.7), 41.4),
    ("SIFT+IFV [3]", (83.0, 68.1, 35.1, 26.6, 38.1), 50.1),
    ("CNN_FT [45]", (93.6, 93.8, 75.2, 58.6, 71.6), 78.6),
    ("VAE + softmax (paper)", (76.0, 49.0, 40.0, 27.0, 30.0), 44.4),
)


def load_latents(path: str) -> Dict[str, np.ndarray]:
    """Read a latents file written by :func:`vae.encode.encode_dataset`.

    Returns
    -------
    dict
        ``mu`` float32 (n, d), ``count`` int64 (n,), and ``cumulative_area`` /
        ``sigma`` / ``index`` and the visual properties of
        :data:`vae.encode.PROPERTY_FIELDS` when present (``stimulus_set_names``:
        list of str, when ``stimulus_set`` carries a ``names`` attribute).
    """
    if not os.path.isfile(path):
        raise ValueError(f"latents file {path!r} does not exist")
    out: Dict[str, np.ndarray] = {}
    try:
        with h5py.File(path, "r") as f:
            for key in ("mu", "count"):
                if key not in f:
                    raise ValueError(f"latents file {path!r} lacks the dataset {key!r}")
            for key in ("mu", "sigma", "count", "cumulative_area", "index") + PROPERTY_FIELDS:
                if key in f:
                    out[key] = f[key][()]
            if "stimulus_set" in f and "names" in f["stimulus_set"].attrs:
                out["stimulus_set_names"] = [str(v) for v in f["stimulus_set"].attrs["names"]]
            out["attrs"] = dict(f.attrs)
    except OSError as e:
        raise ValueError(f"latents file {path!r} is not a readable HDF5 file ({e})") from None
    if out["mu"].ndim != 2 or out["count"].shape != (out["mu"].shape[0],):
        raise ValueError(f"latents file {path!r}: mu must be (n, d) and count (n,), "
                         f"got {out['mu'].shape} and {out['count'].shape}")
    out["mu"] = out["mu"].astype(np.float32)
    out["count"] = out["count"].astype(np.int64)
    bad = ~np.isfinite(out["mu"]).all(axis=1)
    if bad.any():
        # A diverged model gives NaN/inf codes; a probe or a regression on them would
        # fail late or, worse, report NaN as a result.
        rows = np.nonzero(bad)[0]
        raise ValueError(f"latents file {path!r}: mu is not finite in {rows.size} of {len(bad)} images (rows "
                         f"{', '.join(map(str, rows[:5].tolist()))}{', ...' if rows.size > 5 else ''}); "
                         "encode with a checkpoint whose loss stayed finite")
    return out


def _mlp(in_dim: int, hidden: Sequence[int], rng: np.random.Generator):
    import torch
    from torch import nn

    layers = []
    dims = [in_dim, *hidden, NUM_CLASSES]
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        lin = nn.Linear(a, b)
        # PyTorch's default init (U(-1/sqrt(fan_in), 1/sqrt(fan_in))), drawn from rng
        bound = 1.0 / math.sqrt(a)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(rng.uniform(-bound, bound, (b, a)).astype(np.float32)))
            lin.bias.copy_(torch.from_numpy(rng.uniform(-bound, bound, b).astype(np.float32)))
        layers.append(lin)
        if i < len(dims) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@contextlib.contextmanager
def _one_torch_thread():
    """Run the tiny MLP on one CPU thread, then restore the caller's setting.

    Its matrices are too small to gain from threads, and on a shared CPU extra
    threads spin against each other: measured 2.6 s with one thread against 47 s
    with two on a loaded 2-core machine, same result.
    """
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def fit_probe(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, *, hidden: Sequence[int] = (160, 160),
              weighted: bool = True, lr: float = 1e-3, weight_decay: float = 1e-4, batch_size: int = 256,
              max_epochs: int = 200, patience: int = 15, val_fraction: float = 0.1, device: str = "cpu",
              progress: bool = False):
    """Train the probe on latents ``x`` with classes ``y``.

    Parameters
    ----------
    x : numpy.ndarray of float, shape (n, d)
        Frozen latents (already standardised or not: the caller's choice).
    y : numpy.ndarray of int, shape (n,)
        Classes 0..4.
    rng : numpy.random.Generator
        Source of the initial weights, the hold-out split and the batch order.
    hidden : sequence of int
        Hidden layer widths; ``(160, 160)`` is the paper's, ``()`` a linear softmax.
    weighted : bool
        Class-weighted cross-entropy (paper) or plain.
    val_fraction : float in [0, 0.5)
        Held out for early stopping; 0 trains ``max_epochs`` epochs without it.

    Returns
    -------
    model : torch.nn.Module
        In eval mode, on ``device``, returning logits (B, 5).
    info : dict
        ``epochs_run``, ``best_epoch``, ``class_weights``, ``best_val_loss``.
    """
    import torch
    from torch import nn

    if not 0.0 <= val_fraction < 0.5:
        raise ValueError(f"val_fraction must be in [0, 0.5), got {val_fraction}")
    if max_epochs < 1 or batch_size < 1:
        raise ValueError(f"max_epochs and batch_size must be >= 1, got {max_epochs} and {batch_size}")
    n = x.shape[0]
    if n < 2 or y.shape != (n,):
        raise ValueError(f"need at least 2 training latents with one class each, got x {x.shape} and y {y.shape}")
    support = np.bincount(y, minlength=NUM_CLASSES).astype(np.float64)
    present = support > 0
    w = np.zeros(NUM_CLASSES)
    # balanced weights; a class absent from training gets weight 0 (it cannot be learned)
    w[present] = n / (present.sum() * support[present]) if weighted else 1.0
    perm = rng.permutation(n)
    n_val = int(round(val_fraction * n))
    val_idx, tr_idx = perm[:n_val], perm[n_val:]

    model = _mlp(x.shape[1], hidden, rng).to(device)
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32, device=device))
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    yt = torch.from_numpy(y.astype(np.int64)).to(device)

    best = (math.inf, 0, None)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=max_epochs, desc="probe", unit="epoch", leave=False)
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        model.train()
        order = tr_idx[rng.permutation(tr_idx.size)]
        for s in range(0, order.size, batch_size):
            b = torch.from_numpy(order[s:s + batch_size]).to(device)
            opt.zero_grad()
            loss = loss_fn(model(xt[b]), yt[b])
            loss.backward()
            opt.step()
        if bar is not None:
            bar.update(1)
        if n_val == 0:
            continue
        model.eval()
        with torch.no_grad():
            v = torch.from_numpy(val_idx).to(device)
            val_loss = float(loss_fn(model(xt[v]), yt[v]))
        if val_loss < best[0] - 1e-6:
            best = (val_loss, epoch, {k: t.detach().clone() for k, t in model.state_dict().items()})
        elif epoch - best[1] >= patience:
            break
    if bar is not None:
        bar.close()
    if best[2] is not None:
        model.load_state_dict(best[2])
    model.eval()
    info = {"epochs_run": epoch, "best_epoch": best[1] if n_val else epoch, "class_weights": w.tolist(),
            "best_val_loss": best[0] if n_val else None, "train_support": support.astype(int).tolist()}
    return model, info


def _balanced_weights(y: np.ndarray, weighted: bool, num_classes: int = NUM_CLASSES) -> np.ndarray:
    n = y.size
    support = np.bincount(y, minlength=num_classes).astype(np.float64)
    present = support > 0
    w = np.zeros(num_classes)
    w[present] = n / (present.sum() * support[present]) if weighted else 1.0
    return w


def exact_count_probe(x_train: np.ndarray, count_train: np.ndarray, x_test: np.ndarray, count_test: np.ndarray, *,
                      l2: float = 1e-3) -> dict:
    """Class-balanced logistic read-out of the exact count (every N its own class, no 4+).

    Table 1's classes merge N >= 4; on stimuli with N up to 8 or more that hides most
    of the range, so the demo also reports this. Inputs are standardised with the
    training statistics.

    Returns
    -------
    dict
        ``classes`` (the counts present in training), ``accuracy`` per class,
        ``mean_accuracy``, ``chance`` (1 / classes), ``n_train``, ``n_test``.
    """
    ct, cs = np.asarray(count_train, dtype=np.int64), np.asarray(count_test, dtype=np.int64)
    classes = np.unique(ct)
    if classes.size < 2:
        raise ValueError(f"the exact-count probe needs at least 2 counts in training, got {classes.tolist()}")
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    predict, _ = fit_logistic((x_train - mean) / std, np.searchsorted(classes, ct), l2=l2,
                              num_classes=int(classes.size))
    pred = classes[np.argmax(predict((x_test - mean) / std), axis=1)]
    acc = [float(np.mean(pred[cs == c] == c)) if np.any(cs == c) else float("nan") for c in classes]
    return {"classes": classes.tolist(), "accuracy": acc, "mean_accuracy": float(np.nanmean(acc)),
            "chance": 1.0 / classes.size, "n_train": int(ct.size), "n_test": int(cs.size)}


def fit_logistic(x: np.ndarray, y: np.ndarray, *, weighted: bool = True, l2: float = 1e-3, max_iter: int = 300,
                 tol: float = 1e-9, num_classes: int = NUM_CLASSES):
    """Class-balanced multinomial logistic regression, full batch, L-BFGS in float64.

    Minimises ``sum_i w_{y_i} CE(x_i W^T + b, y_i) / sum_i w_{y_i} + l2 / 2 * ||W||^2``
    with the balanced weights ``w_k = n / (K * n_k)`` (0 for a class absent from
    training, as in :func:`fit_probe`), from ``W = 0, b = 0``. Convex and free of
    randomness: the same inputs give the same weights.

    Parameters
    ----------
    x : numpy.ndarray of float, shape (n, d)
        Inputs (the caller standardises them).
    y : numpy.ndarray of int, shape (n,)
        Classes 0..num_classes - 1.
    weighted : bool
        Balanced class weights (default) or every image alike.
    l2 : float >= 0
        Weight decay on ``W`` (not on ``b``).
    num_classes : int >= 2
        5 for the Table 1 classes 0..4+; the demo also reads exact N out with more.

    Returns
    -------
    predict : callable
        numpy (m, d) -> class probabilities (m, num_classes), float64.
    info : dict
        ``l2``, ``weighted``, ``class_weights``, ``iterations`` (L-BFGS function
        evaluations), ``final_loss``, ``train_support``.
    """
    import torch

    n = x.shape[0]
    if n < 2 or y.shape != (n,):
        raise ValueError(f"need at least 2 training latents with one class each, got x {x.shape} and y {y.shape}")
    if not (l2 >= 0 and math.isfinite(l2)):
        raise ValueError(f"l2 must be a non-negative number, got {l2}")
    if not (isinstance(num_classes, int) and num_classes >= 2 and y.min() >= 0 and y.max() < num_classes):
        raise ValueError(f"classes must be in 0..{num_classes - 1} with num_classes >= 2, got {y.min()}..{y.max()}")
    w = _balanced_weights(y, weighted, num_classes)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))
    yt = torch.from_numpy(y.astype(np.int64))
    sw = torch.from_numpy(w)[yt]
    sw = sw / sw.sum()
    W = torch.zeros(num_classes, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([W, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol, tolerance_change=tol * 1e-3,
                            history_size=20, line_search_fn="strong_wolfe")

    def loss_of():
        logp = torch.log_softmax(xt @ W.T + b, dim=1)
        return -(sw * logp.gather(1, yt[:, None])[:, 0]).sum() + 0.5 * l2 * (W * W).sum()

    def objective():
        opt.zero_grad()
        loss = loss_of()
        loss.backward()
        return loss

    opt.step(objective)
    with torch.no_grad():
        final = float(loss_of())
    Wn, bn = W.detach().numpy().copy(), b.detach().numpy().copy()

    def predict(xs: np.ndarray) -> np.ndarray:
        z = np.asarray(xs, dtype=np.float64) @ Wn.T + bn
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    info = {"l2": l2, "weighted": weighted, "class_weights": w.tolist(),
            "iterations": int(opt.state[W].get("func_evals", 0)),
            "final_loss": final, "train_support": np.bincount(y, minlength=num_classes).astype(int).tolist()}
    return predict, info


def probe_arrays(x_train: np.ndarray, count_train: np.ndarray, x_test: np.ndarray, count_test: np.ndarray, *,
                 seed: int = 0, hidden: Sequence[int] = (160, 160), weighted: bool = True, device: str = "cpu",
                 progress: bool = False, logistic: bool = True, logistic_l2: float = 1e-3, **fit_kwargs) -> dict:
    """Standardise, train the probe on the train latents, score it on the test latents.

    Parameters
    ----------
    x_train, x_test : numpy.ndarray of float, shape (n, d) and (m, d)
    count_train, count_test : numpy.ndarray of int, shape (n,) and (m,)
        Object counts (>= 4 become class 4+).
    seed : int
        Seeds the one Generator behind every random choice.
    logistic : bool
        Also fit the class-balanced logistic regression (:func:`fit_logistic`, with
        ``weighted`` and ``logistic_l2``) on the same inputs.

    Returns
    -------
    dict
        The MLP's :func:`vae.metrics.count_metrics` on the test split, ``chance`` from
        :func:`vae.metrics.chance_rows`, and ``probe`` (settings and training info);
        with ``logistic``, a ``logistic`` dict with the same metric keys, the same
        ``chance`` and its own ``probe`` (``kind`` "logistic" and fit info).
    """
    x_train = np.asarray(x_train, dtype=np.float64)
    x_test = np.asarray(x_test, dtype=np.float64)
    if x_train.ndim != 2 or x_test.ndim != 2 or x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"train and test latents must be (n, d) with equal d, got {x_train.shape} and {x_test.shape}")
    if x_test.shape[0] == 0:
        raise ValueError("the test latents are empty")
    y_tr = metrics.to_classes(np.asarray(count_train), NUM_CLASSES)
    y_te = metrics.to_classes(np.asarray(count_test), NUM_CLASSES)
    rng = np.random.default_rng(seed)
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std < 1e-12] = 1.0  # a constant unit carries nothing; keep it at 0 instead of dividing by 0
    import torch

    with _one_torch_thread():
        model, info = fit_probe((x_train - mean) / std, y_tr, rng, hidden=hidden, weighted=weighted, device=device,
                                progress=progress, **fit_kwargs)
        with torch.no_grad():
            logits = model(torch.from_numpy(((x_test - mean) / std).astype(np.float32)).to(device))
            prob = torch.softmax(logits, dim=1).cpu().numpy().astype(np.float64)
    out = metrics.count_metrics(y_te, prob)
    out["chance"] = metrics.chance_rows(y_te, NUM_CLASSES, rng=np.random.default_rng([seed, 1]))
    out["probe"] = {"hidden": list(hidden), "weighted": weighted, "seed": seed, "n_train": int(y_tr.size),
                    "n_test": int(y_te.size), "latent_dim": int(x_train.shape[1]), **info}
    if logistic:
        with _one_torch_thread():
            predict, linfo = fit_logistic((x_train - mean) / std, y_tr, weighted=weighted, l2=logistic_l2)
        lo = metrics.count_metrics(y_te, predict((x_test - mean) / std))
        lo["chance"] = out["chance"]
        lo["probe"] = {"kind": "logistic", "solver": "L-BFGS, full batch, float64, from zero weights",
                       "n_train": int(y_tr.size), "n_test": int(y_te.size), "latent_dim": int(x_train.shape[1]),
                       **linfo}
        out["logistic"] = lo
    return out


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.1f}"


def format_table1(measured: Sequence[Tuple[str, Sequence[float], float]], *, title: str = "",
                  notes: Sequence[str] = ()) -> str:
    """Markdown table in the layout of the paper's Table 1 (%), published rows first.

    Parameters
    ----------
    measured : sequence of (name, five per-class values in [0, 1] or NaN, mean)
        Rows measured here.
    """
    head = "| Count label → | " + " | ".join(CLASS_NAMES) + " | mean |"
    lines = [f"### {title}" if title else "", "", head, "|" + "---|" * 7]
    for name, vals, mean in PUBLISHED_TABLE1:
        lines.append(f"| {name} — *published, not measured* | " + " | ".join(f"{v:.1f}" for v in vals)
                     + f" | {mean:.1f} |")
    for name, vals, mean in measured:
        lines.append(f"| **{name}** — measured | " + " | ".join(_pct(v) for v in vals) + f" | {_pct(mean)} |")
    lines.append("")
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines).lstrip() + "\n"


def table1_rows(result: dict, label: str = "VAE + MLP") -> list:
    """The measured rows of one probe result: chance, then the three metrics."""
    ch = result["chance"]
    rows = [("Chance: label frequency (this test set)", ch["frequency"], ch["mean_frequency"])]
    if "ap_voc11_random" in ch:
        rows.append(("Chance: random ranking, count AP VOC 11-pt", ch["ap_voc11_random"], ch["mean_ap_voc11_random"]))
    return rows + _metric_rows(result, label)


def _metric_rows(result: dict, label: str) -> list:
    return [
        (f"{label}: count AP, VOC 11-pt (Zhang et al.)", result["ap_voc11"], result["mean_ap_voc11"]),
        (f"{label}: AP, non-interpolated (sklearn-equivalent)", result["ap"], result["mean_ap"]),
        (f"{label}: per-class accuracy (authors' code)", result["accuracy"], result["mean_accuracy"]),
    ]


def _logistic_label(label: str) -> str:
    return label.replace("MLP", "logistic regression") if "MLP" in label else f"{label} (logistic)"


def table1_rows_with_logistic(result: dict, label: str = "VAE + MLP", logistic_label: Optional[str] = None,
                              chance: bool = True) -> list:
    """:func:`table1_rows` of the MLP, then the logistic probe's three metric rows.

    ``logistic_label`` defaults to ``label`` with "MLP" replaced by "logistic
    regression" (or "LABEL (logistic)"); without a ``logistic`` entry in ``result``
    this is :func:`table1_rows`. ``chance=False`` drops the chance rows.
    """
    rows = table1_rows(result, label) if chance else _metric_rows(result, label)
    if result.get("logistic"):
        rows += _metric_rows(result["logistic"], logistic_label or _logistic_label(label))
    return rows


def _logistic_note(res: dict) -> tuple:
    lo = res.get("logistic")
    if not lo:
        return ()
    return (f"Logistic regression rows: the linear control, multinomial on the same standardised latents, "
            f"{'class-balanced' if lo['probe']['weighted'] else 'unweighted'} cross-entropy, L2 {lo['probe']['l2']:g} "
            f"on the weights, full-batch L-BFGS.",)


TABLE1_NOTES = (
    "Published rows: Table 1 of Wever & Runia (SOS test set, count AP in %); rows 2-4 from Zhang et al.",
    "Measured rows are on the test latents given here; they compare with the published rows only when "
    "those latents are the SOS test split.",
    "The authors' probe code printed per-class accuracy under the 'count AP' caption; the paper's "
    "VAE row may therefore be accuracy, not AP.",
)


def json_clean(obj):
    """NaN -> None so the JSON is standard (an undefined per-class value)."""
    if isinstance(obj, float):
        return None if math.isnan(obj) else obj
    if isinstance(obj, dict):
        return {k: json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return json_clean(obj.item())
    return obj


def run_probe(train_h5: str, test_h5: str, out_dir: str, *, seed: int = 0, hidden: Sequence[int] = (160, 160),
              weighted: bool = True, device: str = "cpu", progress: bool = True, label: str = "VAE + MLP",
              logistic: bool = True, **fit_kwargs) -> dict:
    """Probe train/test latents files and write ``probe.json`` and ``table1.md`` in ``out_dir``.

    Returns
    -------
    dict
        The contents of ``probe.json`` (NaN written as null): ``ap_voc11``, ``ap``,
        ``accuracy`` (5 values each), their ``mean_*``, ``chance``, ``probe``, inputs,
        and ``logistic`` (the same metrics for the logistic probe) unless ``logistic=False``.
        ``table1.md`` has a row per metric for each probe.
    """
    tr = load_latents(train_h5)
    te = load_latents(test_h5)
    res = probe_arrays(tr["mu"], tr["count"], te["mu"], te["count"], seed=seed, hidden=hidden, weighted=weighted,
                       device=device, progress=progress, logistic=logistic, **fit_kwargs)
    res["train_latents"] = os.path.abspath(train_h5)
    res["test_latents"] = os.path.abspath(test_h5)
    res["classes"] = list(CLASS_NAMES)
    res = json_clean(res)
    os.makedirs(out_dir, exist_ok=True)
    write_json_atomic(os.path.join(out_dir, "probe.json"), res, indent=2)
    table = format_table1(table1_rows_with_logistic(res, label),
                          title="Count classification on frozen latents (Table 1 layout, %)",
                          notes=TABLE1_NOTES + (f"Test images: {res['probe']['n_test']}, train images: "
                                                f"{res['probe']['n_train']}, seed {seed}.",) + _logistic_note(res))
    with atomic_write(os.path.join(out_dir, "table1.md"), "w") as f:
        f.write(table)
    return res

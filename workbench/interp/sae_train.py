"""Training TopK / BatchTopK SAEs and transcoders from cached activations, resumably.

    sae = train_sae("acts/", hook="blocks.10.hook_resid_post", k=32, width=4608,
                    tokens=5_000_000, out="results/sae/L10")

The source is a disk cache written with positions "all" (`workbench cache --positions all`, or
`cache_tokens(..., positions="all", out=DIR)`), an in-memory one, or a tensor [n, d] of rows
(a pair (x, y) for a transcoder). Rows are every position of every text; the first (the start
token, whose residual norm is an outlier) is left out unless `exclude_first=False`. The rows are
read a group of shards at a time, in a seeded order of shards, shuffled within the group, and
cycled through until `tokens` rows have been seen.

What makes TopK SAEs train well (Gao et al. 2024, sparsify): inputs scaled so that their mean
norm is sqrt(d_in) (the scale is folded into the weights at the end and recorded), the decoder
bias started at the geometric median of the first batch, decoder rows kept at unit norm with the
gradient parallel to them removed, the AuxK loss (1/32) on latents dead for `dead_after` tokens,
Adam with lr 2e-4 / sqrt(width / 2^14) decayed linearly to 0 over the last 20% of steps, a
fixed seed. With `out`, a checkpoint is written every `checkpoint_every` tokens; a killed run
rerun with the same arguments resumes and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.errors import InputError
from ..core.progress import progress_bar
from ..core.storage import temp_path, write_atomically
from ..model.corpus_cache import CorpusCache, DiskCorpusCache, open_cache
from .sae import SAE, load_sae
from .sae_config import ARCHITECTURES, SAEConfig

CHECKPOINT = "checkpoint.pt"
TEXT_BLOCK = 512  # texts per block of an in-memory cache
ROW_BLOCK = 65536  # rows per block of a tensor source


@dataclass(frozen=True)
class TrainOptions:
    """How to train (see `train_sae`). tokens: rows seen in training, counted after leaving out
    each text's first position; dead_after: tokens without firing before a latent counts as dead
    for AuxK (default: a fifth of `tokens`, at most 10M as in Gao et al.)."""

    k: int
    width: int
    tokens: int
    hook: str | None = None
    hook_out: str | None = None
    architecture: str = "topk"
    skip: bool = False
    batch_size: int = 1024
    lr: float | None = None
    seed: int = 0
    exclude_first: bool = True
    auxk_alpha: float = 1 / 32
    dead_after: int | None = None
    checkpoint_every: int = 500_000
    group_size: int = 4

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else 2e-4 / math.sqrt(self.width / 2**14)

    def dead_tokens(self) -> int:
        return (
            self.dead_after
            if self.dead_after is not None
            else max(1, min(10_000_000, self.tokens // 5))
        )


# ----------------------------------------------------------------------------- the data


@dataclass
class RowSource:
    """Rows to train on, as blocks whose sizes are known without reading them.

    sizes[i]: rows in block i; load(i) -> (x [m, d_in], y [m, d_out] or None), float32.
    """

    sizes: list[int]
    load: object
    d_in: int
    d_out: int
    model_name: str
    hook: str
    hook_out: str | None
    context_size: int | None
    description: str


def _rows_of(acts: torch.Tensor, lengths: torch.Tensor, exclude_first: bool) -> torch.Tensor:
    """Real positions of [n_text, pos, d] activations as rows [m, d] (text-major)."""
    positions = torch.arange(acts.shape[1])
    keep = positions[None, :] < lengths[:, None]
    if exclude_first:
        keep &= positions[None, :] >= 1
    return acts[keep].float()


def _counts(lengths: torch.Tensor, exclude_first: bool) -> int:
    return int((lengths - (1 if exclude_first else 0)).clamp_min(0).sum())


def row_source(source, options: TrainOptions) -> RowSource:
    """Check `source` against `options` and describe its rows (nothing is read but lengths)."""
    if isinstance(source, (str, Path)):
        source = open_cache(source)
    if isinstance(source, torch.Tensor) or isinstance(source, tuple):
        return _tensor_source(source, options)
    if not isinstance(source, (CorpusCache, DiskCorpusCache)):
        raise InputError(
            f"an SAE trains on a cache folder, a cache or a tensor [n, d], not {type(source).__name__}"
        )
    where = getattr(source, "name", "the cache")
    if source.positions != "all":
        raise InputError(
            f"{where} kept {source.positions!r} positions; training needs every position: "
            "cache with --positions all"
        )
    hooks = list(source.hooks)
    hook = options.hook or (hooks[0] if len(hooks) == 1 else None)
    if hook is None:
        raise InputError(f"{where} holds several hooks ({', '.join(hooks)}): name one with --hook")
    for name in (hook, options.hook_out):
        if name is not None and name not in hooks:
            raise InputError(
                f"hook {name} is not in the cache at {where}; it holds {', '.join(hooks)}"
            )
    names = [hook] + ([options.hook_out] if options.hook_out else [])
    first = options.exclude_first
    if isinstance(source, DiskCorpusCache):
        lengths = [source.shard_lengths(i) for i in range(source.n_shards)]

        def load(i):
            blocks = [source.read_shard(i, n) for n in names]
            rows = [_rows_of(acts, lens, first) for acts, lens in blocks]
            return rows[0], (rows[1] if len(rows) > 1 else None)

        model_name = source.manifest["model"]["name"]
    else:
        all_lengths = source.lengths
        lengths = list(all_lengths.split(TEXT_BLOCK))

        def load(i):
            part = slice(i * TEXT_BLOCK, (i + 1) * TEXT_BLOCK)
            rows = [_rows_of(source[n][part], all_lengths[part], first) for n in names]
            return rows[0], (rows[1] if len(rows) > 1 else None)

        model_name = source.model_name
    sizes = [_counts(lens, first) for lens in lengths]
    if sum(sizes) == 0:
        raise InputError(f"{where} has no positions to train on (every text is one token long)")
    d_in = _width(source, hook)
    return RowSource(
        sizes,
        load,
        d_in,
        _width(source, options.hook_out) if options.hook_out else d_in,
        model_name,
        hook,
        options.hook_out,
        int(max(int(x.max()) for x in lengths)),
        # what the rows are, not where the folder is (a moved or renamed cache still resumes)
        f"{model_name} cache of {len(source.lengths)} texts, texts_sha256 "
        f"{(source.provenance or {}).get('texts_sha256')}",
    )


def _width(source, hook: str) -> int:
    if isinstance(source, DiskCorpusCache):
        acts, _ = source.read_shard(0, hook)
        return int(acts.shape[-1])
    return int(source[hook].shape[-1])


def _tensor_source(source, options: TrainOptions) -> RowSource:
    x, y = source if isinstance(source, tuple) else (source, None)
    for t in (x, y):
        if t is not None and (t.dim() != 2 or not t.is_floating_point() or len(t) == 0):
            raise InputError(
                f"training rows must be a non-empty float tensor [n, d], not {tuple(t.shape)} {t.dtype}"
            )
    if y is not None and len(y) != len(x):
        raise InputError(
            f"a transcoder needs as many output rows as input rows ({len(y)} != {len(x)})"
        )
    if (y is None) != (options.hook_out is None) and y is not None:
        raise InputError("rows (x, y) train a transcoder: give hook_out too")
    sizes = [min(ROW_BLOCK, len(x) - s) for s in range(0, len(x), ROW_BLOCK)]

    def load(i):
        part = slice(i * ROW_BLOCK, (i + 1) * ROW_BLOCK)
        return x[part].float(), (y[part].float() if y is not None else None)

    return RowSource(
        sizes,
        load,
        x.shape[1],
        y.shape[1] if y is not None else x.shape[1],
        "",
        options.hook or "",
        options.hook_out,
        None,
        f"a tensor of {len(x)} rows",
    )


def batches(source: RowSource, options: TrainOptions, skip_rows: int = 0):
    """Yield (x, y) batches of `options.batch_size` rows forever, in the seeded order, after
    skipping the first `skip_rows` rows of that order (what a resumed run has already seen).
    Batches are views into one shuffled group at a time (only a group's last partial batch is
    copied, into the next group's first)."""
    batch, epoch = options.batch_size, 0
    left_x, left_y = None, None  # rows of the last group not yet yielded (fewer than a batch)
    while True:
        order = torch.randperm(
            len(source.sizes), generator=_generator(options.seed, epoch)
        ).tolist()
        for g in range(0, len(order), options.group_size):
            group = order[g : g + options.group_size]
            n = sum(source.sizes[i] for i in group)
            if skip_rows >= n:  # seen before the checkpoint: not even read
                skip_rows -= n
                continue
            parts = [source.load(i) for i in group]
            shuffle = torch.randperm(n, generator=_generator(options.seed, epoch, g))[skip_rows:]
            skip_rows = 0
            has_y = parts[0][1] is not None
            x = torch.cat([p[0] for p in parts])
            y = torch.cat([p[1] for p in parts]) if has_y else None
            del parts  # the blocks are in x (and y) now: hold one copy, not two
            x = x[shuffle]
            y = y[shuffle] if has_y else None
            if left_x is not None:
                x = torch.cat([left_x, x])
                y = torch.cat([left_y, y]) if y is not None else None
            whole = len(x) - len(x) % batch
            for start in range(0, whole, batch):
                yield x[start : start + batch], (None if y is None else y[start : start + batch])
            left_x = x[whole:].clone()
            left_y = y[whole:].clone() if y is not None else None
            x = y = None  # free this group before the next one is read
        epoch += 1


def _generator(*numbers: int) -> torch.Generator:
    digest = hashlib.sha256(json.dumps(numbers).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


# ----------------------------------------------------------------------------- training


def check_options(options: TrainOptions) -> None:
    """Every training argument, checked before anything is read or written."""
    for name in ("k", "width", "tokens", "batch_size", "checkpoint_every", "group_size"):
        value = getattr(options, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be a whole number of at least 1, not {value!r}")
    if options.k >= options.width:
        raise InputError(f"k ({options.k}) must be smaller than the width ({options.width})")
    if options.architecture not in ARCHITECTURES:
        raise InputError(
            f"architecture must be one of {', '.join(ARCHITECTURES)}, not {options.architecture!r}"
        )
    if options.skip and not options.hook_out:
        raise InputError("a skip connection is for transcoders: give --hook-out too")
    if options.lr is not None and not (math.isfinite(options.lr) and options.lr > 0):
        raise InputError(f"lr must be a positive number, not {options.lr}")
    if not (math.isfinite(options.auxk_alpha) and options.auxk_alpha >= 0):
        raise InputError(f"auxk_alpha must be a number of at least 0, not {options.auxk_alpha}")


def train_sae(
    source,
    *,
    k: int,
    width: int,
    tokens: int,
    hook: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
    **settings,
) -> SAE:
    """Train an SAE (or, with hook_out=, a transcoder) on `source`; see the module docstring.

    settings: the other fields of `TrainOptions` (hook_out, architecture, skip, batch_size, lr,
    seed, exclude_first, auxk_alpha, dead_after, checkpoint_every, group_size).
    Returns the trained SAE for raw activations; `sae.cfg.metadata["training"]` holds the settings,
    the curve (tokens, FVU, dead share) and the time taken. With `out`, the SAE is also saved there
    (SAELens' format) and a finished folder is read back instead of training again.
    device: where the SAE trains ("cuda" on a GPU); rows are read on the CPU and moved batch by
    batch; the SAE returned is on the CPU.
    """
    try:
        options = TrainOptions(k=k, width=width, tokens=tokens, hook=hook, **settings)
    except TypeError as error:
        raise InputError(f"train_sae: {error}") from None
    check_options(options)
    rows = row_source(source, options)
    settings_json = json.dumps(_settings(options, rows), sort_keys=True)
    folder = Path(out) if out is not None else None
    if folder is not None:
        finished = _finished(folder, settings_json)
        if finished is not None:
            return finished
        folder.mkdir(parents=True, exist_ok=True)
    return _Trainer(options, rows, folder, settings_json, progress, torch.device(device)).run()


def _settings(options: TrainOptions, rows: RowSource) -> dict:
    return {
        **dataclasses.asdict(options),
        "lr": options.learning_rate(),
        "dead_after": options.dead_tokens(),
        "source_rows": sum(rows.sizes),
        "source": rows.description,
        "model_name": rows.model_name,
        "hook": rows.hook,
    }


def _finished(folder: Path, settings_json: str) -> SAE | None:
    if not (folder / "cfg.json").is_file():
        return None
    sae = load_sae(folder)
    trained = sae.cfg.metadata.get("training", {}).get("settings")
    if trained != json.loads(settings_json):
        raise InputError(
            f"{folder} already holds an SAE trained with other settings; give another --out or delete it"
        )
    return sae


class _Trainer:
    """One training run: state, steps, checkpoints (see the module docstring)."""

    def __init__(
        self,
        options: TrainOptions,
        rows: RowSource,
        folder,
        settings_json: str,
        progress: bool,
        device: torch.device,
    ):
        self.options, self.rows, self.folder, self.device = options, rows, folder, device
        self.settings_json, self.progress = settings_json, progress
        self.batch = options.batch_size
        self.steps = math.ceil(options.tokens / self.batch)
        cfg = SAEConfig(
            d_in=rows.d_in,
            d_sae=options.width,
            k=options.k,
            architecture=options.architecture,
            hook_name=rows.hook,
            hook_name_out=rows.hook_out,
            d_out=rows.d_out,
            skip=options.skip,
            model_name=rows.model_name,
            context_size=rows.context_size,
        )
        self.sae = SAE(cfg)
        generator = _generator(options.seed, -1)
        bound = 1 / math.sqrt(rows.d_in)
        with torch.no_grad():
            self.sae.W_enc.uniform_(-bound, bound, generator=generator)
            self.sae.W_dec.copy_(
                self.sae.W_enc.T
                if rows.d_in == rows.d_out
                else torch.empty(options.width, rows.d_out).uniform_(
                    -bound, bound, generator=generator
                )
            )
            self.sae.normalize_decoder()
        self.sae.to(device)
        self.optimizer = torch.optim.Adam(
            self.sae.parameters(), lr=options.learning_rate(), eps=6.25e-10
        )
        self.step = 0
        self.since_fired = torch.zeros(options.width, dtype=torch.long, device=device)
        self.scale_in = self.scale_out = 0.0
        self.threshold = 0.0
        self.curve: list[list[float]] = []
        self.seconds = 0.0
        self._restore()

    # -- checkpoints -----------------------------------------------------------------------

    def _checkpoint_path(self) -> Path | None:
        return self.folder / CHECKPOINT if self.folder is not None else None

    def _restore(self) -> None:
        path = self._checkpoint_path()
        if path is None or not path.is_file():
            return
        try:
            state = torch.load(path, weights_only=True, map_location=self.device)
        except Exception as error:  # a damaged checkpoint: say so, do not guess
            raise InputError(
                f"{path}: damaged checkpoint ({type(error).__name__}); delete it to start over"
            ) from None
        if state.get("settings") != self.settings_json:
            raise InputError(
                f"{self.folder} holds a training run with other settings; give another --out or delete it"
            )
        self.sae.load_state_dict(state["sae"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.since_fired = int(state["step"]), state["since_fired"]
        self.scale_in, self.scale_out = float(state["scale_in"]), float(state["scale_out"])
        self.threshold, self.seconds = float(state["threshold"]), float(state["seconds"])
        self.curve = state["curve"].tolist()

    def _save_checkpoint(self) -> None:
        path = self._checkpoint_path()
        if path is None:
            return
        state = {
            "settings": self.settings_json,
            "sae": self.sae.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "since_fired": self.since_fired,
            "scale_in": self.scale_in,
            "scale_out": self.scale_out,
            "threshold": self.threshold,
            "seconds": self.seconds,
            "curve": torch.tensor(self.curve, dtype=torch.float64).reshape(-1, 3),
        }
        tmp = temp_path(path)
        torch.save(state, tmp)
        os.replace(tmp, path)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> SAE:
        options = self.options
        every = max(1, options.checkpoint_every // self.batch)
        curve_every = max(1, self.steps // 100)
        bar = progress_bar(self.steps * self.batch, "training SAE", "tok", self.progress)
        bar.update(self.step * self.batch)
        data = batches(self.rows, options, skip_rows=self.step * self.batch)
        started = time.perf_counter() - self.seconds
        while self.step < self.steps:
            x, y = next(data)
            x, y = x.to(self.device), (None if y is None else y.to(self.device))
            if self.step == 0:
                self._start(x, y)
            fvu = self._train_step(x, y)
            self.step += 1
            dead = float((self.since_fired >= options.dead_tokens()).float().mean())
            if self.step % curve_every == 0 or self.step == self.steps:
                self.curve.append([self.step * self.batch, fvu, dead])
            bar.update(self.batch)
            bar.set_postfix(fvu=f"{fvu:.3f}", dead=f"{dead:.1%}", refresh=False)
            self.seconds = time.perf_counter() - started
            if self.step % every == 0 and self.step < self.steps:
                self._save_checkpoint()
        bar.close()
        return self._finish()

    def _start(self, x: torch.Tensor, y: torch.Tensor | None) -> None:
        """Scales from the first batch (mean norm -> sqrt(d)); b_dec at the targets' geometric median."""
        target = x if y is None else y
        self.scale_in = math.sqrt(x.shape[1]) / float(x.norm(dim=1).mean())
        self.scale_out = (
            self.scale_in if y is None else math.sqrt(y.shape[1]) / float(y.norm(dim=1).mean())
        )
        with torch.no_grad():
            self.sae.b_dec.copy_(_geometric_median(target * self.scale_out))

    def _train_step(self, x: torch.Tensor, y: torch.Tensor | None) -> float:
        sae, options = self.sae, self.options
        x = x * self.scale_in
        y = x if y is None else y * self.scale_out
        pre = sae.pre_activations(x)
        if options.architecture == "batchtopk":
            values, flat = pre.flatten().topk(options.k * len(x), sorted=False)
            z = torch.zeros_like(pre).flatten().scatter(0, flat, values).view_as(pre)
            recon = sae.decode(z, x)
            fired = z.detach().sum(0) > 0
            smallest = float(values.detach().min())
            self.threshold = 0.99 * self.threshold + 0.01 * smallest if self.step else smallest
        else:
            values, indices = pre.topk(options.k, dim=-1, sorted=False)
            recon = sae.decode_sparse(values, indices, x)
            fired = torch.bincount(indices.flatten(), minlength=options.width) > 0
        error = y - recon
        total_variance = (y - y.mean(0)).pow(2).sum()
        fvu = error.pow(2).sum() / total_variance
        loss = fvu + options.auxk_alpha * self._auxk(pre, error, total_variance)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self._project_decoder_gradient()
        torch.nn.utils.clip_grad_norm_(sae.parameters(), 1.0)
        for group in self.optimizer.param_groups:
            group["lr"] = options.learning_rate() * min(
                1.0, (self.steps - self.step) / max(1, 0.2 * self.steps)
            )
        self.optimizer.step()
        sae.normalize_decoder()
        self.since_fired += len(x)
        self.since_fired[fired] = 0
        return float(fvu.detach())

    def _auxk(
        self, pre: torch.Tensor, error: torch.Tensor, total_variance: torch.Tensor
    ) -> torch.Tensor:
        """AuxK: the top dead latents reconstruct the error the live ones left (Gao et al., B.1)."""
        dead = self.since_fired >= self.options.dead_tokens()
        n_dead = int(dead.sum())
        if n_dead == 0:
            return pre.new_zeros(())
        k_aux = min(error.shape[1] // 2, n_dead)
        scale = min(n_dead / (error.shape[1] // 2), 1.0)
        values, indices = torch.where(dead[None], pre, -torch.inf).topk(k_aux, sorted=False)
        estimate = torch.nn.functional.embedding_bag(
            indices, self.sae.W_dec, per_sample_weights=values, mode="sum"
        )
        return scale * (estimate - error.detach()).pow(2).sum() / total_variance

    def _project_decoder_gradient(self) -> None:
        grad, rows = self.sae.W_dec.grad, self.sae.W_dec.data
        if grad is not None:
            grad -= (grad * rows).sum(1, keepdim=True) * rows

    def _finish(self) -> SAE:
        """Fold the input scales into the weights, record how it was made, save, and clean up."""
        sae, s_in, s_out = self.sae, self.scale_in, self.scale_out
        with torch.no_grad():
            sae.W_enc *= s_in
            sae.W_dec /= s_out
            sae.b_dec /= s_out
            if sae.W_skip is not None:
                sae.W_skip *= s_in / s_out
        training = {
            "settings": json.loads(self.settings_json),
            "scale_in": s_in,
            "scale_out": s_out,
            "seconds": round(self.seconds, 1),
            "tokens_seen": self.step * self.batch,
            "curve": {
                "tokens": [c[0] for c in self.curve],
                "fvu": [c[1] for c in self.curve],
                "dead_share": [c[2] for c in self.curve],
            },
        }
        cfg = dataclasses.replace(
            sae.cfg,
            threshold=self.threshold if self.options.architecture == "batchtopk" else 0.0,
            metadata={"training": training},
        )
        trained = SAE(cfg)
        trained.load_state_dict({k: v.cpu() for k, v in sae.state_dict().items()})
        if self.folder is not None:
            trained.save(self.folder)
            write_atomically(self.folder / "training.json", json.dumps(training, indent=1))
            self._checkpoint_path().unlink(missing_ok=True)
        return trained


def _geometric_median(points: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Weiszfeld's iteration for the point minimising the summed distance to `points` [n, d]."""
    guess = points.mean(0)
    for _ in range(iterations):
        weights = 1 / (points - guess).norm(dim=1).clamp_min(1e-8)
        guess = (weights[:, None] * points).sum(0) / weights.sum()
    return guess

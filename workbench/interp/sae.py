"""Sparse autoencoders and transcoders: the module, with SAELens' names.

    sae = wb.load_sae("results/sae/L10")         # a folder we, SAELens or sparsify wrote
    z = sae.encode(x)                            # [..., d_in] -> [..., d_sae], k non-zero per row
    x_hat = sae.decode(z)                        # [..., d_sae] -> [..., d_out]
    x_hat = sae(x)                               # both

An `SAE` reads activations at `cfg.hook_name` and reconstructs them (a transcoder reconstructs
`cfg.hook_name_out` from them instead, optionally with a linear skip connection):

    pre = (x - b_dec) @ W_enc + b_enc            # SAE (b_dec is taken off the input first)
    pre = x @ W_enc + b_enc                      # transcoder (input and output spaces differ)
    z   = the k largest of relu(pre), zeros elsewhere          ("topk", Gao et al. 2024)
        = relu(pre) where relu(pre) > threshold, else 0        ("batchtopk" at inference:
                                                                 Bussmann et al. 2024)
    out = z @ W_dec + b_dec (+ x @ W_skip)

Weights are stored for raw activations: input normalisation used in training is folded into
them when training ends (`workbench.interp.sae_train`), as SAELens does. Reading and writing
SAELens' and sparsify's formats is in `workbench.interp.sae_formats`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int

from ..core.errors import InputError
from .sae_config import ARCHITECTURES, SAEConfig
from .sae_formats import read_sae_files, write_sae_files

__all__ = ["ARCHITECTURES", "SAE", "SAEConfig", "load_sae"]


class SAE(torch.nn.Module):
    """A TopK / BatchTopK sparse autoencoder or transcoder (see the module docstring).

    Parameters (SAELens' names and layouts): W_enc [d_in, d_sae], b_enc [d_sae],
    W_dec [d_sae, d_out], b_dec [d_out], and W_skip [d_in, d_out] when cfg.skip.
    """

    def __init__(self, cfg: SAEConfig, dtype: torch.dtype = torch.float32):
        super().__init__()
        self.cfg = cfg
        self.W_enc = torch.nn.Parameter(torch.zeros(cfg.d_in, cfg.d_sae, dtype=dtype))
        self.b_enc = torch.nn.Parameter(torch.zeros(cfg.d_sae, dtype=dtype))
        self.W_dec = torch.nn.Parameter(torch.zeros(cfg.d_sae, cfg.d_out, dtype=dtype))
        self.b_dec = torch.nn.Parameter(torch.zeros(cfg.d_out, dtype=dtype))
        self.W_skip = (
            torch.nn.Parameter(torch.zeros(cfg.d_in, cfg.d_out, dtype=dtype)) if cfg.skip else None
        )

    # -- the computation --------------------------------------------------------------------

    def pre_activations(
        self, x: Float[torch.Tensor, "... d_in"]
    ) -> Float[torch.Tensor, "... d_sae"]:
        """relu(x W_enc + b_enc), with b_dec taken off an SAE's input first."""
        if not self.cfg.is_transcoder:
            x = x - self.b_dec
        return F.relu(x.to(self.W_enc.dtype) @ self.W_enc + self.b_enc)

    def encode_sparse(
        self, x: Float[torch.Tensor, "... d_in"]
    ) -> tuple[Float[torch.Tensor, "... k"], Int[torch.Tensor, "... k"]]:
        """The k largest activations per row and their latent indices (topk's rule; batchtopk's
        training step selects across the batch instead, in `workbench.interp.sae_train`)."""
        values, indices = self.pre_activations(x).topk(self.cfg.k, dim=-1, sorted=False)
        return values, indices

    def encode(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_sae"]:
        """Latent activations, dense with zeros: k non-zero per row for topk; for batchtopk,
        those above the threshold learned in training."""
        pre = self.pre_activations(x)
        if self.cfg.architecture == "batchtopk":
            return torch.where(pre > self.cfg.threshold, pre, torch.zeros_like(pre))
        values, indices = pre.topk(self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, values)

    def decode(
        self, z: Float[torch.Tensor, "... d_sae"], x: Float[torch.Tensor, "... d_in"] | None = None
    ) -> Float[torch.Tensor, "... d_out"]:
        """z W_dec + b_dec, plus x W_skip for a transcoder with a skip connection (give x)."""
        out = z @ self.W_dec + self.b_dec
        return self._add_skip(out, x)

    def decode_sparse(
        self,
        values: Float[torch.Tensor, "n k"],
        indices: Int[torch.Tensor, "n k"],
        x: Float[torch.Tensor, "n d_in"] | None = None,
    ) -> Float[torch.Tensor, "n d_out"]:
        """`decode` of k (value, index) pairs per row without building the dense [n, d_sae] codes
        (an embedding-bag sum over decoder rows: what makes training cheap)."""
        out = F.embedding_bag(indices, self.W_dec, per_sample_weights=values, mode="sum")
        return self._add_skip(out + self.b_dec, x)

    def forward(self, x: Float[torch.Tensor, "... d_in"]) -> Float[torch.Tensor, "... d_out"]:
        return self.decode(self.encode(x), x)

    def _add_skip(self, out: torch.Tensor, x: torch.Tensor | None) -> torch.Tensor:
        if self.W_skip is None:
            return out
        if x is None:
            raise InputError("this transcoder has a skip connection: decode needs its input x")
        return out + x.to(self.W_skip.dtype) @ self.W_skip

    # -- helpers ------------------------------------------------------------------------------

    @torch.no_grad()
    def normalize_decoder(self) -> None:
        """Scale every decoder row (a latent's direction) to unit norm."""
        self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(
            torch.finfo(self.W_dec.dtype).eps
        )

    def check_input(self, x: torch.Tensor, where: str = "input") -> None:
        """One clear error for activations of the wrong width."""
        if x.shape[-1] != self.cfg.d_in:
            raise InputError(
                f"{where} has width {x.shape[-1]}, but this SAE reads {self.cfg.d_in} "
                f"({self.cfg.hook_name or 'its hook'} of {self.cfg.model_name or 'its model'})"
            )

    def save(self, folder, format: str = "saelens") -> None:
        """Write to `folder` in SAELens' format (the default) or sparsify's."""
        tensors = {name: p.detach().contiguous().cpu() for name, p in self.named_parameters()}
        write_sae_files(self.cfg, tensors, folder, format)

    def __repr__(self) -> str:
        kind = "transcoder" if self.cfg.is_transcoder else "SAE"
        where = self.cfg.hook_name + (
            f" -> {self.cfg.hook_name_out}" if self.cfg.is_transcoder else ""
        )
        return (
            f"{self.cfg.architecture} {kind}(d_in={self.cfg.d_in}, d_sae={self.cfg.d_sae}, "
            f"k={self.cfg.k}, {where or 'no hook'}, model={self.cfg.model_name or '?'})"
        )


def load_sae(path: str | Path, hookpoint: str | None = None) -> SAE:
    """An SAE from a folder in SAELens' or sparsify's format, or from a hub id (``hf:org/name``,
    or ``org/name`` when no such local folder exists) found in the Hugging Face cache; see
    `workbench.interp.sae_formats`. hookpoint: the subfolder to read when there are several."""
    cfg, tensors, weights = read_sae_files(path, hookpoint)
    sae = SAE(
        cfg, dtype=tensors["W_enc"].dtype if tensors["W_enc"].is_floating_point() else torch.float32
    )
    for name, parameter in sae.named_parameters():
        value = tensors.get(name)
        if value is None:
            raise InputError(f"{weights}: tensor {name!r} is missing")
        if tuple(value.shape) != tuple(parameter.shape):
            raise InputError(
                f"{weights}: tensor {name!r} has shape {list(value.shape)}, but the config says "
                f"{list(parameter.shape)}"
            )
        if not torch.isfinite(value).all():
            raise InputError(f"{weights}: tensor {name!r} holds values that are not finite")
        with torch.no_grad():
            parameter.copy_(value)
    if tensors.get("__fold_b_dec__") is not None:
        # SAELens with apply_b_dec_to_input false: x W_enc + b_enc == (x - b_dec) W_enc + (b_enc + b_dec W_enc)
        with torch.no_grad():
            sae.b_enc += sae.b_dec @ sae.W_enc
    return sae

"""What an SAE is (sizes, activation, where it reads and writes): `SAEConfig`, shared by the
module (`workbench.interp.sae`) and the file formats (`workbench.interp.sae_formats`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..core.errors import InputError

ARCHITECTURES = ("topk", "batchtopk")


@dataclass(frozen=True)
class SAEConfig:
    """What an SAE is: sizes, activation, and where in which model it reads and writes.

    d_in: width of the input activations; d_out: of the reconstruction (d_in for an SAE).
    d_sae: number of latents. k: latents kept per token (batchtopk: on average, in training).
    hook_name: the TransformerLens hook read; hook_name_out: the one a transcoder writes
    (None for an SAE). skip: a transcoder's linear skip connection W_skip [d_in, d_out].
    threshold: batchtopk's inference threshold on relu(pre) (0 for topk).
    metadata: free-form provenance (how it was trained, what was folded in), saved with it.
    """

    d_in: int
    d_sae: int
    k: int
    architecture: str = "topk"
    hook_name: str = ""
    hook_name_out: str | None = None
    d_out: int = 0
    skip: bool = False
    model_name: str = ""
    threshold: float = 0.0
    prepend_bos: bool = True
    context_size: int | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.d_out == 0:
            object.__setattr__(self, "d_out", self.d_in)
        for name in ("d_in", "d_sae", "d_out", "k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"SAE {name} must be a whole number of at least 1, not {value!r}")
        if self.k > self.d_sae:
            raise InputError(f"SAE k ({self.k}) cannot exceed the width ({self.d_sae})")
        if self.architecture not in ARCHITECTURES:
            raise InputError(
                f"SAE architecture must be one of {', '.join(ARCHITECTURES)}, "
                f"not {self.architecture!r}"
            )
        if self.skip and not self.is_transcoder:
            raise InputError("a skip connection needs a transcoder (hook_name_out)")
        if not self.is_transcoder and self.d_out != self.d_in:
            raise InputError(
                f"an SAE reconstructs its input: d_out {self.d_out} != d_in {self.d_in}"
            )

    @property
    def is_transcoder(self) -> bool:
        return self.hook_name_out is not None

    def to_dict(self) -> dict:
        return asdict(self)

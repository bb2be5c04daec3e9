"""One path from a model name to a running engine, shared by `bench` and `chat`:

    name -> sources.resolve (the spec `recommend` prices) -> the option to run -> the files it needs
         -> a loaded Engine -> the placement it really has (for estimates and the calibration store)

Everything here returns typed objects; no command reads a dict by key or a sentinel.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from advisor.costmodel import memory as M
from advisor.costmodel import speed as S
from advisor.engines.base import Artifact, Engine, LoadOptions
from advisor.errors import AdvisorError, UsageError
from advisor.spec import Hardware, ModelSpec, Option, Recommendation
from advisor.textutil import safe


@dataclass(frozen=True)
class RunPlan:
    """The option chosen to run, and what it was chosen from."""

    model: str | None  # what the user named (None: the embedded model)
    spec: ModelSpec
    option: Option
    placement: S.Placement  # as planned for `context`
    context: int
    why: str  # "recommended for this machine", "as asked" ...
    notes: tuple[str, ...] = ()

    @property
    def precision(self) -> str:
        return self.option.precision

    @property
    def runtime(self) -> str:
        return self.option.runtime


def resolve_model(model: str | None, *, revision: str | None = None, trust_remote_code: bool = False) -> ModelSpec:
    """The spec of `model` exactly as `advisor recommend` prices it; None is the embedded SmolLM2-135M-Instruct
    (its GGUF file, under its Hub id)."""
    from advisor.paths import EMBEDDED_ID, embedded_gguf
    from advisor.sources import resolve

    if model is None:
        spec = resolve(str(embedded_gguf()))
        return dataclasses.replace(spec, id=EMBEDDED_ID)
    return resolve(model, revision=revision, trust_remote_code=trust_remote_code)


def available_runtimes() -> tuple[str, ...]:
    """The runtimes that can run here: transformers always; llama.cpp when its binding is installed and works."""
    from advisor.engines import llamacpp

    return ("transformers", "llama.cpp") if llamacpp.usable() else ("transformers",)


def recommend_for_run(
    spec: ModelSpec,
    hw: Hardware,
    *,
    context: int,
    prompt_tokens: int = 512,
    calibration: S.Calibration = S.NO_CALIBRATION,
    precisions: list[str] | None = None,
) -> Recommendation:
    """`recommend` as `advisor recommend` would answer it for this run's context."""
    from advisor.recommend import recommend

    return recommend(
        spec, hw, precisions=precisions, context=context, prompt_tokens=prompt_tokens, calibration=calibration
    )


def has_gguf(spec: ModelSpec, model: str | None) -> bool:
    """Whether llama.cpp has a GGUF file to run for this input: the embedded model, a .gguf file, or a folder or
    Hub repo that holds one (advisor cannot convert a transformers checkpoint to GGUF)."""
    if model is None or (spec.quantization or "").startswith("gguf"):
        return True
    return any(name.endswith(".gguf") for name in spec.files)


def runnable(option: Option, spec: ModelSpec, model: str | None) -> bool:
    """Whether this option can be loaded here from this input."""
    return option.runtime != "llama.cpp" or has_gguf(spec, model)


def choose(
    rec: Recommendation,
    *,
    model: str | None,
    context: int,
    precision: str | None = None,
    runtime: str | None = None,
) -> RunPlan:
    """The option to run: `precision` (and `runtime`) as asked, else the recommended option among the runtimes
    that can run here. One clear line when nothing can."""
    from advisor.recommend import choose as pick

    spec = rec.model
    usable = available_runtimes()
    if runtime is not None and runtime not in usable:
        from advisor.engines import llamacpp

        raise UsageError(llamacpp.unavailable_reason())
    notes: list[str] = []
    if precision is not None:
        matches = [o for o in rec.options if o.precision == precision]
        if not matches:
            raise UsageError(
                f"Precision '{safe(precision, 60)}' is not an option for '{safe(spec.id)}': "
                f"`advisor recommend` lists the options."
            )
        option = matches[0]
        if not runnable(option, spec, model):
            raise UsageError(
                f"'{safe(spec.id)}' has no GGUF file for llama.cpp to run {precision}: give a .gguf file or a GGUF "
                "repo, or choose a transformers precision."
            )
        if runtime is not None and option.runtime != runtime:
            raise UsageError(
                f"Precision '{precision}' runs on {option.runtime}, not {runtime}: drop --runtime, or choose a "
                f"{runtime} precision."
            )
        if option.runtime not in usable:
            from advisor.engines import llamacpp

            raise UsageError(llamacpp.unavailable_reason())
        if not option.fits:
            notes.append(f"advisor estimates that {precision} does not fit here; loading it anyway")
        why = "as asked"
    else:
        pool = [
            o
            for o in rec.options
            if o.runtime in usable and (runtime is None or o.runtime == runtime) and runnable(o, spec, model)
        ]
        option, reason = pick(pool)
        if option is None:
            raise AdvisorError(
                f"'{safe(spec.id)}' does not fit on this machine in any precision{_runtime_words(runtime)}: "
                f"{reason}. Pass --precision to try anyway."
            )
        why = "recommended for this machine"
        pick = rec.recommended
        if runtime is None and pick is not None and pick.runtime not in usable:
            notes.append(f"advisor's pick is {pick.precision} on llama.cpp, which cannot run here")
        elif runtime is None and pick is not None and not runnable(pick, spec, model):
            notes.append(
                f"advisor's pick is {pick.precision} on llama.cpp, which needs a GGUF file of this model (a GGUF repo "
                "or a .gguf file)"
            )
    placement = S.plan(spec, option.precision, rec.hardware, context=context)
    return RunPlan(model, spec, option, placement, context, why, tuple(notes))


def _runtime_words(runtime: str | None) -> str:
    return f" on {runtime}" if runtime else ""


def fetch(plan: RunPlan, *, revision: str | None = None, allow_pickle: bool = False) -> Artifact:
    """The files the plan's runtime loads (downloaded, converted or quantized as needed)."""
    from advisor import artifacts

    return artifacts.fetch(
        plan.model, plan.spec, runtime=plan.runtime, precision=plan.precision, revision=revision,
        allow_pickle=allow_pickle,
    )  # fmt: skip


def load_options(
    plan: RunPlan,
    *,
    device_map: Any = None,
    max_memory: dict | None = None,
    gpu_layers: int | None = None,
    kv_cache_type: str | None = None,
    flash_attn: bool | None = None,
    trust_remote_code: bool = False,
) -> LoadOptions:
    """How the plan's engine is loaded: the planned GPU layers for llama.cpp unless asked otherwise."""
    if gpu_layers is None and plan.runtime == "llama.cpp":
        gpu_layers = sum(n for label, n in plan.placement.layers.items() if label != "cpu")
    return LoadOptions(
        precision=plan.precision,
        context=plan.context,
        device_map=device_map,
        max_memory=max_memory,
        gpu_layers=gpu_layers,
        kv_cache_type=kv_cache_type,
        flash_attn=flash_attn,
        trust_remote_code=trust_remote_code,
    )


def llama_settings(options: LoadOptions) -> M.LlamaCppSettings:
    """The cost model's view of a llama.cpp load: its KV cache type and flash attention (on by itself when the V
    cache is quantized, as the engine does), llama-cpp-python's micro-batch and outputs."""
    kv = (options.kv_cache_type or "f16").lower()
    flash = options.flash_attn if options.flash_attn is not None else kv not in ("f16", "f32", "bf16")
    return M.LlamaCppSettings(kv_cache_type=kv, flash_attn=bool(flash))


def open_engine(artifact: Artifact, options: LoadOptions) -> Engine:
    from advisor.engines import open_engine as open_

    return open_(artifact, options)


def loaded_placement(plan: RunPlan, engine: Engine, hw: Hardware) -> S.Placement:
    """The placement the engine really has: the plan's where they agree, else one priced from the engine's own
    layers per device (a `--device-map cpu` on a GPU machine runs, and is recorded, on the CPU)."""
    planned = {k: v for k, v in plan.placement.layers.items() if v > 0}
    if engine.layers_by_device == planned:
        return plan.placement
    return S.placement_from_layers(
        plan.spec, plan.precision, hw, engine.layers_by_device, context=plan.context,
        llama=llama_settings(engine.options) if plan.runtime == "llama.cpp" else M.DEFAULT_LLAMA,
    )  # fmt: skip

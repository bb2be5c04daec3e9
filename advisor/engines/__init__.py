"""Engines: one module per runtime behind one interface (`base.Engine`), chosen by name.

`open_engine(artifact, options)` imports the backend only when it is used, so `advisor recommend` never
imports torch or llama.cpp.
"""

from __future__ import annotations

import importlib

from advisor.engines.base import Artifact, ChatTemplateError, Engine, EngineError, Generation, LoadOptions

# runtime name -> "module:class"
ENGINES = {
    "transformers": "advisor.engines.transformers:TransformersEngine",
    "llama.cpp": "advisor.engines.llamacpp:LlamaCppEngine",
}


def engine_class(runtime: str) -> type[Engine]:
    """The Engine class of a runtime; EngineError for an unknown one."""
    try:
        module, name = ENGINES[runtime].split(":")
    except KeyError:
        raise EngineError(f"Unknown runtime '{runtime}': choose one of {', '.join(ENGINES)}.") from None
    return getattr(importlib.import_module(module), name)


def open_engine(artifact: Artifact, options: LoadOptions) -> Engine:
    """Load `artifact` with the runtime it was fetched for; EngineError (one line) when that cannot be done here."""
    return engine_class(artifact.runtime).load(artifact, options)


__all__ = [
    "ENGINES",
    "Artifact",
    "ChatTemplateError",
    "Engine",
    "EngineError",
    "Generation",
    "LoadOptions",
    "engine_class",
    "open_engine",
]

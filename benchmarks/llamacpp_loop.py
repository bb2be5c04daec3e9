"""advisor's llama.cpp engine against llama-cpp-python's own generation loop, same model and settings.

    python benchmarks/llamacpp_loop.py [GGUF] [--tokens 128] [--repeats 3]

Both load the GGUF with the same context, threads and batch sizes and decode the same greedy continuation of the
same chat prompt; the figure is decode tokens/s (prompt excluded). Target (issue 14): advisor within 5% of the
library's own loop. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTION = "Write a short story about a lighthouse keeper who finds a message in a bottle."


def own_loop(path: Path, prompt: list[int], tokens: int, threads: int, context: int) -> float:
    """llama-cpp-python's Llama.generate: decode tokens/s, timed from the first new token to the last."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), n_ctx=context, n_threads=threads, n_threads_batch=threads, verbose=False)
    try:
        llm.reset()
        t_first = None
        n = 0
        for _token in llm.generate(prompt, temp=0.0, top_k=1, reset=True):
            n += 1
            if n == 1:
                t_first = time.perf_counter()
            if n >= tokens:
                break
        return (n - 1) / (time.perf_counter() - t_first) if t_first and n > 1 else 0.0
    finally:
        llm.close()


def advisors(path: Path, tokens: int, context: int) -> tuple[float, list[int], int]:
    from advisor.engines import Artifact, LoadOptions, open_engine

    engine = open_engine(Artifact("loop", path, "llama.cpp", "local"), LoadOptions("gguf-file", context=context))
    try:
        prompt = engine.chat_prompt([{"role": "user", "content": QUESTION}])
        # as chat runs it: greedy here, stopping at the end of the answer or after `tokens`
        gen = engine.generate(prompt, max_new_tokens=tokens, temperature=0.0)
        threads = int(engine.llm.context_params.n_threads)
        return gen.decode_tok_s, prompt, threads
    finally:
        engine.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gguf", nargs="?", default=None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from advisor.engines import llamacpp
    from advisor.paths import embedded_gguf

    if not llamacpp.usable():
        print(llamacpp.unavailable_reason())
        return 2
    path = Path(args.gguf) if args.gguf else embedded_gguf()
    context = 1024
    ours, theirs = [], []
    for _ in range(args.repeats):  # interleaved, so drift on the machine hits both alike
        tok_s, prompt, threads = advisors(path, args.tokens, context)
        ours.append(tok_s)
        theirs.append(own_loop(path, prompt, args.tokens, threads, context))
    a, b = statistics.median(ours), statistics.median(theirs)
    print(f"advisor's engine: {a:.1f} tok/s (runs {', '.join(f'{x:.1f}' for x in ours)})")
    print(f"llama-cpp-python's loop: {b:.1f} tok/s (runs {', '.join(f'{x:.1f}' for x in theirs)})")
    print(f"ratio {a / b:.3f} (target: within 5%)")
    return 0 if abs(a / b - 1) <= 0.05 else 1


if __name__ == "__main__":
    sys.exit(main())

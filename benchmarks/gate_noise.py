"""Does noise move production? Runs of the same settings, judged by the gate against a first run's champion.

On a small stratified subset of a real set (``--subset`` images), a first run with the default settings
becomes champion; ``--trials`` more runs of the same settings, each with another ``train.seed`` (the
run-to-run variation a user sees), are judged by the gate (:func:`inspectflow.steps.register.decide`)
against it on the same test images. The paired interval of the gain should keep every one of them
challenger. Prints each trial's test score, the gain with its interval and the decision. Usage::

    .venv/bin/python benchmarks/gate_noise.py --set-name neu-cls --subset 180 --trials 5
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from quality import REAL, SETS, fit, stratified_subset

from inspectflow.config import build_config
from inspectflow.steps.ingest import ingest
from inspectflow.steps.register import decide
from inspectflow.tasks import get_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set-name", default="neu-cls", choices=SETS)
    parser.add_argument("--subset", type=int, default=180)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--max-minutes", type=float, default=None, help="train.max_minutes of every run")
    args = parser.parse_args()
    task_name, metric, settings = SETS[args.set_name]
    if args.max_minutes is not None:
        settings = [*settings, f"train.max_minutes={args.max_minutes}"]
    task = get_task(task_name)

    def run(seed: int) -> tuple[object, str]:
        config = build_config(args.set_name.split("-")[0], [*settings, f"train.seed={seed}"], task=task_name)
        model, method, thresholds, _ = fit(task, dataset, config)
        return task.evaluate(model, dataset, config.evaluate.applying(thresholds)), method

    config = build_config(args.set_name.split("-")[0], settings, task=task_name)
    with tempfile.TemporaryDirectory() as folder:
        source = stratified_subset(REAL / args.set_name, args.subset, Path(folder) / args.set_name)
        dataset = ingest(source, config)
    champion, method = run(0)
    print(f"champion (seed 0): test {metric} {getattr(champion, metric):.4f} by {method}", flush=True)
    promoted = 0
    for seed in range(1, args.trials + 1):
        challenger, method = run(seed)
        decision = decide(challenger, champion, config.register_)  # type: ignore[arg-type]
        promoted += decision.promote
        verdict = "PROMOTED" if decision.promote else "kept challenger"
        print(f"seed {seed} ({method}): {verdict}: {decision.reason}", flush=True)
    print(f"{promoted} of {args.trials} runs of the same settings replaced the champion")


if __name__ == "__main__":
    main()

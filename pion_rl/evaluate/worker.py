"""One generation job in its own process, on the devices ``CUDA_VISIBLE_DEVICES`` leaves it.

    python -m pion_rl.evaluate.worker JOB.json OUT.json

JOB.json is :func:`job_spec`'s dict; OUT.json gets ``{"responses": [[text, ...], ...]}`` (per request, its
samples). Started by :mod:`.schedule`; vLLM frees a GPU only when its process ends, so each model runs in a
process of its own.
"""

from __future__ import annotations

import importlib
import json
import sys
from dataclasses import asdict
from pathlib import Path

from .generation import Progress, Request, Sampling


def job_spec(backend: str, model_dir: str, label: str, requests: list[Request], sampling: Sampling,
             devices: int) -> dict:
    """A job as JSON-able data: which backend generates what, with which sampling, on how many devices."""
    return {"backend": backend, "model_dir": model_dir, "label": label, "sampling": asdict(sampling),
            "requests": [asdict(r) for r in requests], "devices": devices}


def generate(spec: dict) -> list[list[str]]:
    """The job's responses: its backend's ``generate`` on its requests (vLLM tensor parallel over ``devices``)."""
    backend = importlib.import_module(f"pion_rl.evaluate.{spec['backend']}")
    requests = [Request(**r) for r in spec["requests"]]
    options = {"tensor_parallel_size": spec["devices"]} if spec["backend"] == "vllm" else {}
    return backend.generate(spec["model_dir"], requests, Sampling(**spec["sampling"]),
                            Progress(spec["label"], len(requests)), **options)


def main(argv: list[str] | None = None) -> int:
    job_file, out_file = argv if argv is not None else sys.argv[1:]
    responses = generate(json.loads(Path(job_file).read_text()))
    Path(out_file).write_text(json.dumps({"responses": responses}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

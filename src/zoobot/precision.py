"""Precision names. Commands take Lightning's names; inference maps each to fp32 or bf16 autocast.

"auto" (inference only) is bf16 autocast on GPUs and on CPUs with bf16 units, else fp32;
``zoobot.predict.resolve_precision`` decides it on the device that runs.

The short spellings ("32", "bf16", ...) are accepted too, as older experiments stored them.
"""

AUTO = "auto"
LIGHTNING_INFERENCE_PRECISIONS = ("32-true", "bf16-mixed")
INFERENCE_PRECISIONS = {
    "32-true": "32", "32": "32", "fp32": "32",
    "bf16-mixed": "bf16", "bf16": "bf16", "bf16-true": "bf16",
    AUTO: AUTO,
}  # name -> the autocast inference runs with

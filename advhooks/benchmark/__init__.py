"""The clean benchmark R*(0): measured once, stored as one safetensors file, read by the monitor.

:mod:`.clean_benchmark` holds the header (:class:`CleanBenchmark`) and how it is measured, :mod:`.file_format`
the file, :mod:`.recipe` the fingerprints and the training recipe a benchmark records.

The file holds the clean model's weights (tensors ``weights.<name>``), the per-sample clean test losses
(``stats.test_losses``, for uncertainty bands) and the header as JSON in the safetensors metadata
(key ``advhooks.record``). :func:`read_header` parses only the header, so reading the header never
reads the weights, and nothing is ever unpickled.
"""

from .clean_benchmark import CleanBenchmark, evaluate_clean
from .file_format import SCHEMA_VERSION, BenchmarkFormatError, read_header, write_json_atomic
from .recipe import (
    RECIPE_KEYS,
    SCHEDULES,
    SETUP_KEYS,
    Recipe,
    RunSetup,
    benchmark_reference,
    check_benchmark_setup,
    dataset_fingerprint,
    differing_keys,
    given_recipe,
    model_fingerprint,
    recipe_differences,
    unwrap_model,
)

__all__ = [
    "RECIPE_KEYS",
    "Recipe",
    "SCHEDULES",
    "SCHEMA_VERSION",
    "SETUP_KEYS",
    "RunSetup",
    "BenchmarkFormatError",
    "CleanBenchmark",
    "benchmark_reference",
    "check_benchmark_setup",
    "dataset_fingerprint",
    "differing_keys",
    "given_recipe",
    "evaluate_clean",
    "model_fingerprint",
    "read_header",
    "recipe_differences",
    "unwrap_model",
    "write_json_atomic",
]


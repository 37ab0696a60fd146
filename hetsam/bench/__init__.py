"""``hetsam bench``: strategies measured side by side on this machine, next to the simulator.

It sits beside the front end (it drives ``AutoSAM``); nothing in the library imports it.
"""

from hetsam.bench.arrangements import (
           Arrangement,
           default_arrangements,
           fitted_pool_arrangement,
)
from hetsam.bench.report import format_report
from hetsam.bench.results import BenchReport, BenchResult
from hetsam.bench.runner import predict, probe_profile, run_bench
from hetsam.profiling.load import wait_quiet
from hetsam.profiling.merge import median_profile

__all__ = ["Arrangement", "BenchResult", "BenchReport", "default_arrangements", "run_bench", "predict",
           "format_report", "median_profile", "probe_profile", "fitted_pool_arrangement",
           "wait_quiet"]

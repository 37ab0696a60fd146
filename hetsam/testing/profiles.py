"""A synthetic profile of a toy machine (a 2-core CPU, one core of it, and a GPU), so the planner
and the simulator have devices and pairs without measuring anything. Torch-free, like the
planner and the simulator that read it.
"""

from __future__ import annotations

import copy

__all__ = ["synthetic_profile_dict"]


def synthetic_profile_dict(**overrides) -> dict:
    """A profile (``hetsam.profiling.schema.Profile.from_dict``) of a toy machine, measured by no one."""
    data = {
        "schema_version": 1,
        "model": {"name": "toy", "parameters": 1000, "parameter_bytes": 4000, "flops_per_sample": 1.0e6},
        "batch_size": 64,
        "devices": [
            {"id": "cpu:0", "kind": "cpu", "name": "Toy CPU", "cores": 2, "threads": 2,
             "grad_seconds": {"batch_sizes": [8, 16, 32, 64], "median": [0.03, 0.05, 0.09, 0.17],
                              "spread": [0.003, 0.005, 0.009, 0.017]}, "update_seconds": 0.001},
            {"id": "cpu:0[0]", "kind": "cpu", "name": "Toy CPU (1 core)", "cores": 1, "threads": 1,
             "grad_seconds": {"batch_sizes": [8, 16, 32, 64], "median": [0.05, 0.09, 0.17, 0.33],
                              "spread": [0.0, 0.0, 0.0, 0.0]}},
            {"id": "cuda:0", "kind": "gpu", "name": "Toy GPU",
             "grad_seconds": {"batch_sizes": [8, 64], "median": [0.004, 0.01], "spread": [0.0004, 0.001]}},
        ],
        "links": [
            {"src": "cpu:0", "dst": "cuda:0", "bytes_per_second": 1.0e9, "latency_seconds": 1.0e-5},
            {"src": "cpu:0", "dst": "cpu:0", "bytes_per_second": 4.0e9, "latency_seconds": 1.0e-6},
        ],
        "contention": [{"devices": ["cpu:0[0]", "cpu:0[1]"], "slowdown": [1.2, 1.25]}],
        "provenance": {"kind": "synthetic", "notes": "test fixture"},
    }
    data = copy.deepcopy(data)
    data.update(overrides)
    return data

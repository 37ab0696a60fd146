"""Every built-in strategy passes ``hetsam.testing.StrategyContract`` (the shipped contract, in the
style of torch's OptimizerInfo database and optuna's sampler test cases). The toy strategy from
outside the package passes the same contract in ``test_strategy_registry.py``."""

from __future__ import annotations

import pytest

from hetsam import strategies
from hetsam.testing import StrategyContract


class TestBuiltinStrategies(StrategyContract):
    @pytest.fixture(params=list(strategies.BUILTIN))
    def spec(self, request):
        return strategies.get(request.param)

    def make_plan(self, spec, **fields):
        """b' = 8 of the 16 samples where a strategy takes b' (its sub-batch path)."""
        if "ascent_batch_size" in spec.fields:  # b' as a Plan field
            fields.setdefault("ascent_batch_size", 8)
        elif any(o.name == "ascent_batch_size" for o in spec.options):  # b' as the strategy's option
            fields.setdefault("options", {"ascent_batch_size": 8})
        return super().make_plan(spec, **fields)

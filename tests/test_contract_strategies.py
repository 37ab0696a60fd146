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
